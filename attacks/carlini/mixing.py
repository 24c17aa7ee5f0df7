"""The InstaHide / Mixup mixing model as the regression inverts it (Carlini et al., arXiv
2011.05315, Sec. 3): encryption e mixes private images x_i with coefficients l_i and public
patches with the remaining weight w = 1 - sum_i l_i, then (InstaHide) flips the sign of every
pixel at random:

    e = sigma * (sum_i l_i x_i + w * public),    labels[e] = sum_i l_i onehot(class_i).

* ``design``: the E x (n + 1) linear design (coefficients at the slots' groups, public weight last;
  ``sparse_design``: the same as a sparse matrix);
* ``public_weight``, ``aligned_coefficients``: coefficients from the released labels (read
  per slot by the grouping's ``lambdas_from_labels``) or from the 'lambdas' oracle.

Who holds which image (memberships, the release's fit to the model) is the grouping's
(hidebench.attacks.grouping.membership).
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.grouping.membership import lambdas_from_labels, match_groups


def public_weight(lam: np.ndarray) -> np.ndarray:
    """Total public coefficient per encryption, 1 - sum of private ones (0 inside-dataset)."""
    return np.clip(1.0 - lam.sum(axis=1), 0.0, 1.0)


def design(assignment: np.ndarray, coef: np.ndarray, n: int, public: np.ndarray | float | None = None) -> np.ndarray:
    """E x (n + 1) float64 design: coef[e, j] at column assignment[e, j] (summed when a group
    repeats), `public` in the last column (None: the design has n columns only).

    With coef = l the design is linear in the images (Mixup, and InstaHide once signs are fixed);
    with coef = l^2 and public = w^2 it models E[e^2] without cross terms."""
    a = np.asarray(assignment, dtype=np.int64)
    E, s = a.shape
    A = np.zeros((E, n + (public is not None)))
    rows = np.arange(E)
    for j in range(s):
        np.add.at(A, (rows, a[:, j]), coef[:, j])
    if public is not None:
        A[:, n] = public
    return A


def sparse_design(assignment: np.ndarray, coef: np.ndarray, n: int, public: np.ndarray | float | None = None):
    """`design` as a scipy CSR matrix (repeated groups summed): slots + 1 entries per row, for
    releases whose dense E x (n + 1) design would be large."""
    from scipy import sparse

    a = np.asarray(assignment, dtype=np.int64)
    E, s = a.shape
    rows, cols = np.repeat(np.arange(E), s), a.ravel()
    vals = np.asarray(coef, dtype=np.float64).ravel()
    if public is not None:
        rows = np.concatenate([rows, np.arange(E)])
        cols = np.concatenate([cols, np.full(E, n)])
        vals = np.concatenate([vals, np.broadcast_to(np.asarray(public, dtype=np.float64), (E,))])
    return sparse.csr_matrix((vals, (rows, cols)), shape=(E, n + (public is not None)))


def aligned_coefficients(values: np.ndarray, ids: np.ndarray, assignment: np.ndarray, labels: np.ndarray,
                         cluster_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True coefficients (values[e, j] of image ids[e, j]) put in the assignment's slot order:
    every group is matched to the image it shares most encryptions with; slots whose matched
    image is not in the row keep the label reading. Returns (lambdas E x slots, split all False)."""
    ids = np.asarray(ids, dtype=np.int64)
    a = np.asarray(assignment, dtype=np.int64)
    match = match_groups(a, ids, int(a.max()) + 1, int(ids.max()) + 1)
    lam, _ = lambdas_from_labels(labels, a, cluster_class)
    for j in range(a.shape[1]):
        hit = ids == match[a[:, j]][:, None]                     # the private ids are distinct per row
        rows = np.flatnonzero(hit.any(1))
        lam[rows, j] = values[rows, hit[rows].argmax(1)]
    return lam.astype(np.float32), np.zeros(len(lam), dtype=bool)
