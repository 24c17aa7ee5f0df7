"""From per-encryption predictions to the private set: fuse each group's predictions.

A decoder predicts, for one encryption, its n_out heaviest private images, without knowing which
private image of the release each prediction is. When the release states T, a grouping (Carlini
et al.'s stages 1-3, or the 'pairs' oracle in an ablation) says which encryptions share a
private image; `fuse_predictions` matches every encryption's outputs to its groups and averages
each group's matched predictions (alternating: match outputs to the current group estimates,
re-estimate), an independent estimate of each private image, its signs included.
"""
from __future__ import annotations

import itertools

import numpy as np


def _standardised(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def fuse_predictions(preds: np.ndarray, assignment: np.ndarray, n_groups: int, *,
                     rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """preds: E x n_out x H x W x C; assignment: E x slots group ids -> (fused n_groups x H x W
    x C, matched E x n_out: the group each output was matched to).

    Each encryption's outputs go to distinct groups among its own, the injective matching of
    highest total correlation with the current estimates; estimates start from the mean of
    every output of the group's encryptions."""
    E, n_out = preds.shape[:2]
    shape = preds.shape[2:]
    A = np.asarray(assignment, dtype=np.int64)
    slots = A.shape[1]
    P = preds.reshape(E, n_out, -1).astype(np.float64)
    Pn = _standardised(P)
    counts = np.bincount(A.ravel(), minlength=n_groups).astype(np.float64)
    est = np.zeros((n_groups, P.shape[-1]))
    np.add.at(est, A.ravel(), np.repeat(P.mean(1), slots, axis=0))
    est /= np.maximum(counts, 1)[:, None]
    options = list(itertools.permutations(range(slots), min(n_out, slots)))
    matched = A[:, :n_out].copy()
    for _ in range(rounds):
        C = np.einsum("eod,esd->eos", Pn, _standardised(est)[A])              # E x n_out x slots
        score = np.stack([sum(C[:, o, s] for o, s in enumerate(opt)) for opt in options], 1)
        best = np.asarray(options)[score.argmax(1)]                               # E x n_used
        new = np.take_along_axis(A, best, 1)
        if np.array_equal(new, matched) and _ > 0:
            break
        matched = new
        est_new = np.zeros_like(est)
        n = np.zeros(n_groups)
        for o in range(best.shape[1]):
            np.add.at(est_new, matched[:, o], P[:, o])
            np.add.at(n, matched[:, o], 1)
        est = np.where(n[:, None] > 0, est_new / np.maximum(n, 1)[:, None], est)
    return np.clip(est, -1, 1).reshape((n_groups,) + shape).astype(np.float32), matched
