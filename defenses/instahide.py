"""Vectorised InstaHide and Mixup encryption.

Follows the authors' reference implementation (Huang, Song, Li, Arora, "InstaHide:
Instance-hiding Schemes for Private Distributed Learning", ICML 2020, `train_cross.py`):
coefficients are k draws of |N(0,1)| normalised to sum 1, redrawn while any exceeds c1 or,
cross-dataset, while the two private coefficients sum below c2; every element of the mix is
multiplied by an independent random sign (InstaHide only).
"""
from __future__ import annotations

import numpy as np

from hidebench.defenses.augment import crop_flip
from hidebench.scheme import EncryptionConfig
from hidebench.types import HidebenchError, PublicView, SecretKey, check_images

__all__ = ["EncryptionConfig", "distinct_others", "encrypt", "mix_rows", "sample_lambdas"]

# Give up on rejection sampling when fewer than this fraction of draws is accepted.
MIN_ACCEPTANCE = 1e-4


def sample_lambdas(rng: np.random.Generator, n: int, cfg: EncryptionConfig) -> np.ndarray:
    """n x k coefficients with the rejection rule of the reference code, drawn in batches. cfg:
    anything with k, c1 and mode (and c2 when mode is 'cross'), e.g. TextHide's scheme."""
    out = np.empty((n, cfg.k), dtype=np.float64)
    filled, drawn, accepted = 0, 0, 0
    while filled < n:
        batch = max(1024, 2 * (n - filled))
        lam = np.abs(rng.standard_normal((batch, cfg.k)))
        lam /= lam.sum(axis=1, keepdims=True)
        ok = lam.max(axis=1) <= cfg.c1
        if cfg.mode == "cross":
            ok &= lam[:, 0] + lam[:, 1] >= cfg.c2
        drawn += batch
        accepted += int(ok.sum())
        acc = lam[ok][: n - filled]
        out[filled: filled + len(acc)] = acc
        filled += len(acc)
        if filled < n and drawn >= 100 / MIN_ACCEPTANCE and accepted < drawn * MIN_ACCEPTANCE:
            raise HidebenchError(
                f"coefficient constraints accept fewer than {MIN_ACCEPTANCE:.0e} of draws "
                f"(k={cfg.k}, c1={cfg.c1}, c2={cfg.c2}); relax c1 or c2")
    return out


def distinct_others(rng: np.random.Generator, first: np.ndarray, n: int, m: int) -> np.ndarray:
    """Per row, m distinct indices in [0, n) all different from first[row]."""
    if m == 0:
        return np.empty((len(first), 0), dtype=np.int64)
    out = np.empty((len(first), m), dtype=np.int64)
    todo = np.arange(len(first))
    while len(todo):
        draw = rng.integers(0, n - 1, size=(len(todo), m))
        draw += draw >= first[todo, None]          # skip the row's own index
        s = np.sort(draw, axis=1)
        ok = np.all(s[:, 1:] != s[:, :-1], axis=1)
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


def mix_rows(private: np.ndarray, public: np.ndarray | None, sel: np.ndarray, lam: np.ndarray, slots: int,
             sign: np.ndarray, scheme_has_mask: bool, chunk: int = 256) -> np.ndarray:
    """sum_j lam[e, j] * row[sel[e, j]] (times the sign mask), on flat E x D rows: images here,
    sentence representations in TextHide (hidebench.defenses.texthide).

    Works in chunks of rows so the temporaries stay in cache: several times faster than
    whole-array passes, with the same result.
    """
    E, D = sel.shape[0], private.shape[1]
    out = np.empty((E, D), dtype=np.float32)
    tmp = np.empty((chunk, D), dtype=np.float32)
    for a in range(0, E, chunk):
        b = min(a + chunk, E)
        o, t = out[a:b], tmp[: b - a]
        np.take(private, sel[a:b, 0], axis=0, out=o)
        o *= lam[a:b, 0:1]
        for j in range(1, sel.shape[1]):
            np.take(private if j < slots else public, sel[a:b, j], axis=0, out=t)
            t *= lam[a:b, j: j + 1]
            o += t
        if scheme_has_mask:
            o *= sign[a:b]
    return out


def encrypt(private_images: np.ndarray, private_labels: np.ndarray, n_classes: int, cfg: EncryptionConfig,
            seed: int | np.random.SeedSequence | None = None, public_patches: np.ndarray | None = None,
            class_names: list[str] | None = None) -> tuple[PublicView, SecretKey]:
    """Encrypt every private image T times; return the shuffled public view and the key.

    public_patches (cross-dataset only): P x H x W x C bank of public images; each public slot
    draws one uniformly. With no seed, 128 bits of OS entropy are used and recorded in the key.
    """
    x = np.asarray(check_images("private images", private_images, value_range=1.0), dtype=np.float32)
    y = np.asarray(private_labels, dtype=np.int64)
    n = len(x)
    if y.shape != (n,):
        raise HidebenchError(f"{n} private images but private labels of shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise HidebenchError(f"private labels must lie in 0..{n_classes - 1}")
    slots = cfg.n_private_slots
    if n < slots:
        raise HidebenchError(f"k={cfg.k} {cfg.mode}-dataset needs at least {slots} distinct private images, got {n}")
    n_public = cfg.k - slots
    if n_public:
        if public_patches is None or len(public_patches) == 0:
            raise HidebenchError("cross-dataset mixing needs a non-empty bank of public patches")
        public = np.asarray(check_images("public patches", public_patches, value_range=1.0), dtype=np.float32)
        if public.shape[1:] != x.shape[1:]:
            raise HidebenchError(f"public patches {public.shape[1:]} and private images {x.shape[1:]} differ in shape")

    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seed_value = int(ss.entropy)
    r_lam, r_sel, r_pub, r_mask, r_order = (np.random.default_rng(s) for s in ss.spawn(5))

    E = n * cfg.T
    lam = sample_lambdas(r_lam, E, cfg).astype(np.float32)
    first = np.repeat(np.arange(n), cfg.T)
    others = distinct_others(r_sel, first, n, slots - 1)
    sel = np.concatenate([first[:, None], others], axis=1)
    if n_public:
        sel = np.concatenate([sel, r_pub.integers(0, len(public), size=(E, n_public))], axis=1)
    order = r_order.permutation(E)          # release order, applied before the images are mixed
    sel, lam = sel[order], lam[order]

    shape = x.shape[1:]
    flat_private, mix_sel, augmentation = x.reshape(n, -1), sel, None
    if cfg.augment:     # each (encryption, private slot) gets its own crop and flip of the image
        r_aug = np.random.default_rng(ss.spawn(1)[0])
        views, params = zip(*(crop_flip(x[sel[:, j]], r_aug) for j in range(slots)))
        flat_private = np.concatenate(views).reshape(slots * E, -1)
        augmentation = np.stack(params, axis=1).astype(np.int8)
        mix_sel = sel.copy()
        mix_sel[:, :slots] = np.arange(slots)[None, :] * E + np.arange(E)[:, None]
    if cfg.scheme == "instahide":
        sign = r_mask.integers(0, 2, size=(E,) + shape, dtype=np.int8)
        sign *= 2
        sign -= 1
    else:
        sign = np.ones((E,) + shape, dtype=np.int8)
    enc = mix_rows(flat_private, public.reshape(len(public), -1) if n_public else None, mix_sel, lam, slots,
               sign.reshape(E, -1), scheme_has_mask=cfg.scheme == "instahide").reshape((E,) + shape)

    labels = np.zeros((E, n_classes), dtype=np.float32)
    np.add.at(labels, (np.arange(E)[:, None], y[sel[:, :slots]]), lam[:, :slots])

    view = PublicView(enc, labels, cfg.k, cfg.mode, cfg.scheme,
                      list(class_names) if class_names else [str(i) for i in range(n_classes)], T=cfg.T,
                      c1=cfg.c1, c2=cfg.c2, augment=cfg.augment)
    key = SecretKey(private=x, private_labels=y, selection=sel, lambdas=lam, sign=sign, seed=seed_value,
                    n_private_slots=slots, augmentation=augmentation)
    return view, key
