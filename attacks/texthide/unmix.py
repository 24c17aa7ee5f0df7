"""Unmixing: with the masks removed a TextHide release is Mixup on vectors, u_e = sum_j
lambda_ej x_(s_ej); recover every private representation x.

Grouping + least squares, as Carlini et al. (arXiv 2011.05315) do for InstaHide images: the
cosine similarity of the unmasked, centred encryptions (two encryptions sharing a sentence
correlate) goes through the grouping's clustering and assignment (hidebench.attacks.grouping:
one group per private sentence, every encryption assigned its n_private_slots groups, groups
kept consistent with the labels' classes); then alternating least squares: the private
representations given the coefficients (a sparse ridge problem over all encryptions at once),
and each encryption's coefficients given the representations (the labels' per-class sums
enforced softly). The fitted mixtures then re-estimate every mask group's mask (masks.py), which
fixes the dimensions whose sign the mixtures' bias left uncertain, and the grouping runs again
(`rounds`). Last, each dimension's global sign, which the release cannot fix (flipping it in every
mask and every representation changes no encryption), is aligned with the attacker's own
sentences (align_signs). An inter release's public partners are not modelled one by one: their expected part,
(1 - private label mass) times the public corpus' mean, is removed when the public corpus is granted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hidebench.attacks.grouping import assignment as asg
from hidebench.attacks.grouping.groups import assign_groups, find_cores
from hidebench.attacks.grouping.membership import label_support
from hidebench.attacks.texthide.config import UnmixConfig
from hidebench.attacks.texthide.masks import masks_from_groups
from hidebench.pipeline import json_field
from hidebench.resources import check_memory
from hidebench.threat import Membership
from hidebench.types import HidebenchError


@dataclass
class Unmixing:
    """assignment: E x slots group ids (one group per private sentence); lambdas: their fitted
    coefficients; recovered: n x d representations of the groups; cluster_class: each group's
    class; mask_index / mask_pool: the masks after the refinement rounds."""

    assignment: np.ndarray
    lambdas: np.ndarray
    recovered: np.ndarray
    cluster_class: np.ndarray
    mask_index: np.ndarray
    mask_pool: np.ndarray
    stats: dict = json_field()
    timings: dict = json_field()


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mixing_matrix(assignment: np.ndarray, lambdas: np.ndarray, n: int):
    """The sparse E x n matrix holding every encryption's coefficients."""
    from scipy import sparse

    E, s = assignment.shape
    rows = np.repeat(np.arange(E), s)
    return sparse.csr_matrix((lambdas.ravel(), (rows, assignment.ravel())), shape=(E, n))


def solve_representations(U: np.ndarray, assignment: np.ndarray, lambdas: np.ndarray, n: int, ridge: float,
                          fallback: np.ndarray) -> np.ndarray:
    """argmin_X ||U - M X||^2 + ridge ||X - fallback||^2 (M: mixing_matrix), via the normal equations."""
    from scipy import sparse
    from scipy.sparse.linalg import splu

    M = mixing_matrix(assignment, lambdas, n)
    A = (M.T @ M + ridge * sparse.identity(n)).tocsc()
    b = M.T @ U + ridge * fallback
    return splu(A).solve(np.asarray(b, dtype=np.float64))


def solve_coefficients(U: np.ndarray, assignment: np.ndarray, X: np.ndarray, labels: np.ndarray,
                       classes: np.ndarray, weight: float) -> np.ndarray:
    """Per encryption, argmin_l ||u - sum_j l_j x_j||^2 + weight * ||K l - label||^2 with K the
    class-membership of its groups (a row per class, and one for the total), then clipped at 0
    and rescaled to the label's private mass."""
    E, s = assignment.shape
    B = X[assignment]                                            # E x s x d
    G = np.einsum("esd,etd->est", B, B)
    h = np.einsum("esd,ed->es", B, U)
    C = labels.shape[1]
    cls = classes[assignment]                                    # E x s
    K = np.concatenate([(cls[:, None, :] == np.arange(C)[None, :, None]).astype(np.float64),
                        np.ones((E, 1, s))], axis=1)             # E x (C + 1) x s
    target = np.concatenate([labels, labels.sum(1, keepdims=True)], axis=1)
    scale = np.maximum(np.einsum("ess->e", G) / s, 1e-6)[:, None, None]
    A = G + weight * scale * np.einsum("ecs,ect->est", K, K) + 1e-6 * scale * np.eye(s)[None]
    rhs = h + weight * scale[:, :, 0] * np.einsum("ecs,ec->es", K, target)
    lam = np.linalg.solve(A, rhs[..., None])[..., 0]
    lam = np.maximum(lam, 0)
    total = labels.sum(1, keepdims=True)
    sums = lam.sum(1, keepdims=True)
    return np.where(sums > 1e-9, lam * total / np.maximum(sums, 1e-12), total / s)


def group(U: np.ndarray, center: np.ndarray, labels: np.ndarray, n: int, T: int, slots: int, cfg: UnmixConfig,
          seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The grouping's clustering and assignment on the cosine similarity of the centred rows."""
    import warnings

    V = unit_rows((U - center[None, :]).astype(np.float32))
    S = V @ V.T
    np.fill_diagonal(S, -2.0)
    support = label_support(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # sklearn: "graph is not fully connected" on small releases
        cores, st = find_cores(S, support, n, T, cfg.clustering, seed=seed)
        A, classes, ast = assign_groups(lambda g: asg.cluster_scores(S, g), labels, cores, T, slots, cfg.assignment,
                                        core_size=st["core_size"])
    return A, classes, {**st, **ast}


def unmix(enc: np.ndarray, labels: np.ndarray, mask_index: np.ndarray, mask_pool: np.ndarray, *, n: int, T: int,
          slots: int, mean: np.ndarray, public_mean: np.ndarray, cfg: UnmixConfig, seed: int,
          membership: Membership | None = None, refine_masks: bool = True,
          reference: np.ndarray | None = None) -> Unmixing:
    """The private representations of a release (module docstring). membership: oracle
    'assignment' (the grouping is skipped); refine_masks False: the masks are the key's (and no
    sign is aligned); reference: the attacker's own representations, to align each dimension's
    sign (align_signs, when cfg.align_signs)."""
    E, d = enc.shape
    if E > cfg.dense_max:
        raise HidebenchError(f"the unmixing groups with an E x E similarity; {E} encryptions exceed unmix.dense_max="
                             f"{cfg.dense_max} (raise it if the memory allows)")
    check_memory(E * E * 8 + E * d * 48, f"unmixing {E:,} encryptions")
    enc = enc.astype(np.float64)
    labels = labels.astype(np.float64)
    public_part = (1.0 - labels.sum(1, keepdims=True)) * public_mean[None, :].astype(np.float64)
    center = mean.astype(np.float64)
    pool = mask_pool.copy()
    timings, stats, history = {"grouping_s": 0.0, "least_squares_s": 0.0}, {}, []
    for rnd in range(cfg.rounds + 1):
        U = enc * pool[mask_index] - public_part
        t0 = time.perf_counter()
        if membership is not None:
            A = np.asarray(membership.ids, dtype=np.int64)
            classes = np.asarray(membership.classes, dtype=np.int64)
            gstats = {"oracle": "assignment"}
        else:
            A, classes, gstats = group(U, center, labels, n, T, slots, cfg, seed + rnd)
        timings["grouping_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        lam = np.repeat(labels.sum(1, keepdims=True) / slots, slots, axis=1)
        fallback = np.repeat(center[None, :], n, axis=0)
        for _ in range(cfg.ls_iters):
            X = solve_representations(U, A, lam, n, cfg.ridge, fallback)
            lam = solve_coefficients(U, A, X, labels, classes, cfg.label_weight)
        fit = np.einsum("es,esd->ed", lam, X[A])
        residual = float(np.linalg.norm(U - fit) / max(np.linalg.norm(U), 1e-12))
        history.append(residual)
        timings["least_squares_s"] += time.perf_counter() - t0
        stats = gstats
        if rnd < cfg.rounds and refine_masks:
            pool = masks_from_groups(enc, mask_index, len(pool), fit + public_part)
    stats = {**stats, "relative_residual_per_round": [round(r, 5) for r in history], "rounds": cfg.rounds}
    if cfg.align_signs and refine_masks and reference is not None and len(reference):
        signs = align_signs(X, reference)
        X, pool = X * signs, (pool * signs.astype(np.int8)).astype(np.int8)
        stats["dims_sign_aligned"] = int((signs < 0).sum())
    return Unmixing(assignment=A, lambdas=lam.astype(np.float32), recovered=X.astype(np.float32),
                    cluster_class=classes, mask_index=mask_index, mask_pool=pool, stats=stats, timings=timings)


def align_signs(recovered: np.ndarray, reference: np.ndarray, iters: int = 10) -> np.ndarray:
    """Per dimension, the sign (+-1) that makes the recovered representations agree with their
    nearest reference representations (the attacker's own sentences), iterated to a fixed point.

    Flipping one dimension of every mask and every private representation leaves the release
    unchanged (hidebench.text.metrics), so the unmixing recovers each dimension only up to that
    sign; the mixtures' mean decides it where it is far from 0. Near neighbours among real
    sentences decide the rest, even when the private sentences are not among them."""
    r = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    signs = np.ones(recovered.shape[1])
    for _ in range(iters):
        x = recovered * signs
        nearest = (unit_rows(x) @ r.T).argmax(1)
        new = np.sign((recovered * reference[nearest]).sum(0))
        new[new == 0] = 1
        if np.array_equal(new, signs):
            break
        signs = new
    return signs


def heavy_rows(u: Unmixing) -> np.ndarray:
    """E x d: for every encryption, the recovered representation with its largest coefficient."""
    heavy = u.assignment[np.arange(len(u.assignment)), np.argmax(u.lambdas, axis=1)]
    return u.recovered[heavy]
