"""Mask-pool recovery: which of the m masks every encryption carries, and what each mask is.

An encryption is e = s * x, x a mixture and s one of m sign vectors reused across the release,
so sign(e) = s * sign(x). Mixtures of sentence representations have strongly biased signs
(reference.py), so the encryptions carrying one mask share most of their sign pattern while
those of two masks agree on half of it: k-means on the sign patterns (each dimension weighted by
the square root of its bias, so that dimensions whose sign the mixture decides carry the
clustering) finds the mask groups, and within a group the sign of the mean encryption, times the
sign of the mean mixture, is the mask. Dimensions whose sign is not biased stay uncertain here;
the unmixing refines them (unmix.py). The attacker does not need to know m beyond the release's
statement of it; min(m, E) groups are formed.

Xie and Hong (EMNLP 2021) attack TextHide by recovering the masks and then the private data;
their paper's text was not reachable when this was written, so this follows the idea, not their
exact procedure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hidebench.attacks.texthide.config import MaskConfig
from hidebench.pipeline import json_field


@dataclass
class MaskEstimate:
    """index[e]: the mask group of encryption e; pool[c]: the estimated mask of group c (int8 +-1)."""

    index: np.ndarray
    pool: np.ndarray
    stats: dict = json_field()
    timings: dict = json_field()


def sign_features(enc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Unit rows of sign(e) weighted by sqrt(bias) per dimension."""
    f = np.sign(enc).astype(np.float32) * np.sqrt(np.maximum(bias, 1e-3)).astype(np.float32)[None, :]
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def cluster_masks(enc: np.ndarray, bias: np.ndarray, m: int, cfg: MaskConfig, seed: int) -> np.ndarray:
    """E mask-group labels in [0, min(m, E))."""
    groups = min(m, len(enc))
    if groups <= 1:
        return np.zeros(len(enc), dtype=np.int64)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=groups, n_init=cfg.n_init, max_iter=cfg.max_iter, random_state=seed)
    return km.fit(sign_features(enc, bias)).labels_.astype(np.int64)


def orient(values: np.ndarray) -> np.ndarray:
    """sign(values) as int8 +-1 (0 -> +1)."""
    s = np.sign(values).astype(np.int8)
    s[s == 0] = 1
    return s


def masks_from_groups(enc: np.ndarray, index: np.ndarray, n_groups: int, target: np.ndarray) -> np.ndarray:
    """The mask of every group: sign(sum over its encryptions of e * target), where target is what
    the unmasked encryption is expected to look like: the mean mixture (one vector) or each
    encryption's fitted mixture (E x d)."""
    prod = enc * target if target.ndim == 2 else enc * target[None, :]
    sums = np.zeros((n_groups, enc.shape[1]))
    np.add.at(sums, index, prod)
    return orient(sums)


def recover_masks(enc: np.ndarray, bias: np.ndarray, mean: np.ndarray, m: int, cfg: MaskConfig,
                  seed: int) -> MaskEstimate:
    """The mask groups and their masks (module docstring)."""
    import time

    t0 = time.perf_counter()
    index = cluster_masks(enc, bias, m, cfg, seed)
    n_groups = int(index.max()) + 1
    target = mean if np.any(mean) else np.ones(enc.shape[1])
    pool = masks_from_groups(enc, index, n_groups, target)
    sizes = np.bincount(index, minlength=n_groups)
    return MaskEstimate(index=index, pool=pool,
                        stats={"mask_groups": n_groups, "group_size_min_max": [int(sizes.min()), int(sizes.max())]},
                        timings={"cluster_s": time.perf_counter() - t0})
