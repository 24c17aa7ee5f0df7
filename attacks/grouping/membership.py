"""Who holds which private image, as the released labels and a grouping say it.

A release of InstaHide / Mixup encryptions (Carlini et al., arXiv 2011.05315, Sec. 3) mixes in
each encryption `n_private_slots` private images whose classes and coefficients the label row
shows (labels[e] = sum_i l_i onehot(class_i)). Everything here is numpy:

* ``label_support``: the classes each label row names;
* ``membership_matrix`` / ``co_membership`` / ``match_groups``: who holds which image, and how
  two groupings overlap;
* ``lambdas_from_labels``: each (encryption, slot)'s private coefficient as its label row reads
  it for a grouping;
* ``check_release``: does a release fit the mixing model (``plausible_T``: the T its labels
  allow, from the class counts of its private slots)?
"""
from __future__ import annotations

import numpy as np

from hidebench.types import HidebenchError

# Label entries at or below this are absent (private coefficients are >= ~1e-3 in practice).
LABEL_EPS = 1e-6


def label_support(labels: np.ndarray) -> np.ndarray:
    """E x n_classes bool: the classes present in each encryption's label."""
    return np.asarray(labels) > LABEL_EPS


def membership_matrix(ids: np.ndarray, n: int, dtype=bool) -> np.ndarray:
    """E x n: 1 where encryption e holds image (or group) id, from E x slots ids (-1: none)."""
    ids = np.asarray(ids, dtype=np.int64)
    M = np.zeros((len(ids), n), dtype=dtype)
    rows, cols = np.nonzero(ids >= 0)
    M[rows, ids[rows, cols]] = 1
    return M


def co_membership(a_ids: np.ndarray, b_ids: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """n_a x n_b int64: encryptions holding group a (in grouping a_ids) and image b (in b_ids).
    Counted over each row's slot pairs (O(E slots^2), no E x n matrices)."""
    a = np.asarray(a_ids, dtype=np.int64)
    b = np.asarray(b_ids, dtype=np.int64)
    out = np.zeros((n_a, n_b), dtype=np.int64)
    for i in range(a.shape[1]):
        # a row counts each (group, image) once, even when a group repeats in it
        first_a = np.all(a[:, :i] != a[:, i:i + 1], axis=1)
        for j in range(b.shape[1]):
            first_b = np.all(b[:, :j] != b[:, j:j + 1], axis=1)
            ok = (a[:, i] >= 0) & (b[:, j] >= 0) & first_a & first_b
            np.add.at(out, (a[ok, i], b[ok, j]), 1)
    return out


def lambdas_from_labels(labels: np.ndarray, assignment: np.ndarray,
                        cluster_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Private coefficients per (encryption, slot) from the released labels.

    Slot j of encryption e gets labels[e, class of its group]. Where two groups of a row share a
    class (or a class is unknown), the label holds only their sum: the slots share it evenly and
    ``split`` is True, for the regression to estimate the split.
    Returns (lambdas E x slots float32, split E bool).
    """
    labels = np.asarray(labels, dtype=np.float64)
    a = np.asarray(assignment, dtype=np.int64)
    cls = np.asarray(cluster_class, dtype=np.int64)[a]          # E x s
    E, s = a.shape
    known = cls >= 0
    lam = np.zeros((E, s))
    lam[known] = labels[np.nonzero(known)[0], cls[known]]
    # A slot whose class repeats in its row, or is unknown, only knows a shared total.
    shared = ~known
    for i in range(s):
        for j in range(s):
            if i != j:
                shared[:, i] |= known[:, i] & known[:, j] & (cls[:, i] == cls[:, j])
    split = shared.any(axis=1)
    for e in np.nonzero(split)[0]:
        classes = np.unique(cls[e][known[e]])
        for c in classes:                                         # slots of one class share its entry
            same = known[e] & (cls[e] == c)
            lam[e, same] = labels[e, c] / same.sum()
        if (~known[e]).any():                                     # unknown slots share what is left
            rest = max(labels[e].sum() - labels[e, classes].sum(), 0.0)
            lam[e, ~known[e]] = rest / (~known[e]).sum()
    return lam.astype(np.float32), split


def match_groups(a_ids: np.ndarray, b_ids: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """For every group of a_ids, the image of b_ids it shares most encryptions with."""
    return co_membership(a_ids, b_ids, n_a, n_b).argmax(1)


def class_slot_counts(labels: np.ndarray, slots: int) -> np.ndarray | None:
    """Private slots per class over the whole release, where the labels fix them: one slot per
    nonzero label entry, two for a two-slot row with a single entry (both images of one class).
    None when a row of more than two slots repeats a class (its count is then unknown)."""
    sup = label_support(labels)
    nnz = sup.sum(1)
    if slots == 2:
        return (sup * np.where(nnz == 1, 2, 1)[:, None]).sum(0)
    return sup.sum(0) if (nnz == slots).all() else None


def class_image_counts(counts: np.ndarray, slots: int, T: int, n: int) -> np.ndarray:
    """Private images per class that best explain the slot counts when every image heads T
    encryptions (class c holds about slots * T * n_c slots), whole and summing to n."""
    share = counts / (slots * T)
    n_c = np.floor(share).astype(np.int64)
    short = n - int(n_c.sum())           # the shares sum to n: hand out the remainder
    n_c[np.argsort(-(share - n_c), kind="stable")[:short]] += 1
    return n_c


def plausible_T(labels: np.ndarray, slots: int, *, alpha: float = 1e-3) -> list[tuple[int, float]]:
    """The T (encryptions per private image) the labels leave possible, largest first, each with
    its p-value. Candidates: E / T whole and at least `slots` private images. Test: in the
    challenge's generation (every private image heads T encryptions, the other slots drawn
    uniformly) class c's slot count is about slots * T * n_c with variance (slots - 1) T n_c
    (1 - n_c / n) for whole n_c summing to n; a chi-square over the classes rejects at `alpha`.
    This narrows T but cannot fix it (T and T / 2 fit alike): count.py decides between them."""
    from scipy.stats import chi2

    E = len(labels)
    counts = class_slot_counts(labels, slots)
    out = []
    for T in range(E // slots, 0, -1):
        if E % T:
            continue
        n = E // T
        if counts is None:
            out.append((T, 1.0))
            continue
        n_c = class_image_counts(counts, slots, T, n)
        present = counts > 0
        if np.any(present & ((n_c == 0) | (counts < T))):     # an image of the class heads T encryptions
            continue
        var = (slots - 1) * T * n_c[present] * (1 - n_c[present] / n)
        stat = float(((counts[present] - slots * T * n_c[present]) ** 2 / np.maximum(var, 1e-9)).sum())
        p = float(chi2.sf(stat, max(int(present.sum()) - 1, 1)))
        if p >= alpha:
            out.append((T, p))
    return out


def describe_T_candidates(E: int, cands, limit: int = 6) -> str:
    shown = ", ".join(f"{T} (n_priv {E // T})" for T in cands[:limit]) + (", ..." if len(cands) > limit else "")
    return shown or "none"


def check_release(view) -> int:
    """Check that a release fits the mixing model the attack inverts; return its number of
    private images, E / T."""
    E = len(view)
    if not view.T:
        cands = [T for T, _ in plausible_T(view.labels, view.n_private_slots)]
        raise HidebenchError(f"the release does not state T (encryptions per private image), and its labels do not fix "
                             f"it: T that fit its {E} encryptions and class counts, largest first: "
                             f"{describe_T_candidates(E, cands)}; give --T or --n-priv")
    n = E // view.T                      # a PublicView's T divides E
    slots = view.n_private_slots
    if n < slots:
        raise HidebenchError(f"E / T = {n} private images cannot fill the {slots} private slots of each encryption")
    if view.encryptions.shape[1:] != (32, 32, 3):
        raise HidebenchError(f"encryptions must be E x 32 x 32 x 3, got {view.encryptions.shape}")
    nnz = label_support(view.labels).sum(1)
    if nnz.min() < 1:
        raise HidebenchError(f"{int((nnz < 1).sum())} encryptions have an all-zero label; labels must hold the "
                             "private coefficients")
    if nnz.max() > slots:
        raise HidebenchError(f"labels have up to {int(nnz.max())} nonzero entries, but k={view.k} {view.mode}-dataset "
                             f"mixes only {slots} private images: does k/mode match the release?")
    tot = view.labels.sum(1)
    if view.mode == "inside" and np.abs(tot - 1).max() > 1e-3:
        raise HidebenchError("inside-dataset labels must sum to 1 per row")
    if tot.max() > 1 + 1e-3:
        raise HidebenchError(f"label rows sum to up to {tot.max():.4f} > 1: not InstaHide coefficients")
    return n
