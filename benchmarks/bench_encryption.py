"""Encryption speed: hidebench's vectorised InstaHide against a per-sample loop.

The loop follows the authors' reference code (Huang et al. 2020, `train_cross.py`): for every
encryption, redraw |N(0,1)|^k until the c1/c2 constraints hold, pick the other images, mix,
and draw a sign mask. Both run on the 2020 challenge's sizes (100 private images, T=50, k=6
cross-dataset) with a ready bank of public patches, i.e. after data loading and patch
filtering, which is what the issue asks to time.

    python benchmarks/bench_encryption.py [--n-priv 100 --T 50 --k 6 --repeats 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hidebench.defenses.instahide import EncryptionConfig, encrypt


def per_sample_loop(private, labels, n_classes, cfg: EncryptionConfig, public, rng):
    """One encryption at a time, as the reference implementation does it."""
    n, out, out_labels = len(private), [], []
    for i in range(n):
        for _ in range(cfg.T):
            lam = np.abs(rng.normal(0, 1, size=cfg.k))
            lam /= lam.sum()
            while lam.max() > cfg.c1 or lam[0] + lam[1] < cfg.c2:
                lam = np.abs(rng.normal(0, 1, size=cfg.k))
                lam /= lam.sum()
            j = rng.integers(0, n - 1)
            j += j >= i
            pub = rng.integers(0, len(public), size=cfg.k - 2)
            mix = lam[0] * private[i] + lam[1] * private[j]
            for s, p in enumerate(pub):
                mix = mix + lam[2 + s] * public[p]
            mask = rng.integers(0, 2, size=mix.shape) * 2 - 1
            out.append((mix * mask).astype(np.float32))
            y = np.zeros(n_classes, dtype=np.float32)
            y[labels[i]] += lam[0]
            y[labels[j]] += lam[1]
            out_labels.append(y)
    order = rng.permutation(len(out))
    return np.stack(out)[order], np.stack(out_labels)[order]


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-priv", type=int, default=100)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    private = rng.uniform(-1, 1, size=(a.n_priv, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, size=a.n_priv)
    cfg = EncryptionConfig(k=a.k, mode="cross", T=a.T)
    public = rng.uniform(-1, 1, size=(a.n_priv * a.T * (a.k - 2), 32, 32, 3)).astype(np.float32)
    vec_best, vec_med = best_of(lambda: encrypt(private, labels, 10, cfg, seed=1, public_patches=public), a.repeats)
    loop_best, loop_med = best_of(lambda: per_sample_loop(private, labels, 10, cfg, public, np.random.default_rng(1)),
                                  max(1, a.repeats // 2))
    E = a.n_priv * a.T
    print(f"encryptions: {E} (n_priv={a.n_priv}, T={a.T}, k={a.k} cross-dataset)")
    print(f"vectorised   best {vec_best:.3f} s  median {vec_med:.3f} s")
    print(f"per-sample   best {loop_best:.3f} s  median {loop_med:.3f} s")
    print(f"speed-up     {loop_best / vec_best:.1f}x (best of each)")


if __name__ == "__main__":
    main()
