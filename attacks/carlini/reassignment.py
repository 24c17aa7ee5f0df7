"""Regression-driven reassignment for the Carlini et al. attack (arXiv 2011.05315): re-choose
each encryption's pair of groups from the images the regression recovered, an EM-style step
in the spirit of k-means. Repeating regression and reassignment pools the evidence of each
group's encryptions, which one encryption alone gives only weakly at k = 6.

Cross-dataset InstaHide only (two private slots): the label names the classes of the two
private images and their coefficients, so only label-consistent pairs are candidates.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hidebench.attacks.carlini.mixing import public_weight
from hidebench.attacks.grouping.membership import label_support


def _unit_centred(a):
    """Rows centred and scaled to unit norm (dot products are Pearson correlations)."""
    a = a - a.mean(-1, keepdim=True)
    return a / (a.norm(dim=-1, keepdim=True) + 1e-9)


def _laplacian(t, shape):
    """4-neighbour Laplacian over the two spatial axes of flattened H x W x C images (edges
    replicated): keeps the fine structure the private images leave in e^2 and drops the smooth
    energy of the public patches."""
    import torch

    x = t.reshape(t.shape[:-1] + tuple(shape))
    up = torch.cat([x[..., :1, :, :], x[..., :-1, :, :]], dim=-3)
    down = torch.cat([x[..., 1:, :, :], x[..., -1:, :, :]], dim=-3)
    left = torch.cat([x[..., :, :1, :], x[..., :, :-1, :]], dim=-2)
    right = torch.cat([x[..., :, 1:, :], x[..., :, -1:, :]], dim=-2)
    return (4 * x - up - down - left - right).reshape(t.shape)


def energy_features(encryptions: np.ndarray, device=None):
    """E x P torch rows: each encryption's L e^2 (`_laplacian` of its squared pixels, where the
    private images' edges show and the public patches' smooth energy does not), centred and of
    unit norm: dot products are correlations."""
    import torch

    enc = np.asarray(encryptions, np.float32)
    return _unit_centred(_laplacian(torch.as_tensor(enc.reshape(len(enc), -1) ** 2, device=device), enc.shape[1:]))


def _candidate_pairs(classes: tuple, rows: np.ndarray, members, labels: np.ndarray, splits: tuple):
    """The candidate pairs for rows whose label names `classes`: (rows x m groups a, rows x m
    groups b, the coefficient pairs (l_a, l_b) to try, as E-vectors), or None for a label that
    names neither one class nor two. members(c, rows): rows x m' candidate groups of class c."""
    if len(classes) == 2:
        ga, gb = members(classes[0], rows), members(classes[1], rows)
        ia, ib = np.repeat(np.arange(ga.shape[1]), gb.shape[1]), np.tile(np.arange(gb.shape[1]), ga.shape[1])
        return ga[:, ia], gb[:, ib], [(labels[:, classes[0]], labels[:, classes[1]])]
    if len(classes) == 1:                  # both images of one class: the label holds l_a + l_b
        g = members(classes[0], rows)
        ia, ib = np.triu_indices(g.shape[1], 1)
        return g[:, ia], g[:, ib], [(labels[:, classes[0]] * s, labels[:, classes[0]] * (1 - s)) for s in splits]
    return None


def _pair_fits(X, mu, y2, w: np.ndarray, pa: np.ndarray, pb: np.ndarray, coef: list, shape, dev):
    """rows x m fit of each candidate pair (pa, pb): corr(L e^2, L m^2) at the best coefficient
    pair in `coef` (per-row arrays); -inf for a pair of one group with itself. y2: the rows'
    centred, unit L e^2; w: their public weights."""
    import torch

    a_t = torch.as_tensor(pa, device=dev)
    b_t = torch.as_tensor(pb, device=dev)
    wr = torch.as_tensor(w, device=dev)[:, None, None]
    fit = None
    for la, lb in coef:
        la_t = torch.as_tensor(la, device=dev)[:, None, None]
        lb_t = torch.as_tensor(lb, device=dev)[:, None, None]
        m = la_t * X[a_t] + lb_t * X[b_t] + wr * mu
        f = (_unit_centred(_laplacian(m * m, shape)) * y2[:, None]).sum(-1)
        fit = f if fit is None else torch.maximum(fit, f)
    return torch.where(a_t == b_t, torch.full_like(fit, -np.inf), fit)


class Reassignment(NamedTuple):
    """What `reassign` chose: assignment (E x 2 group ids); margin (E: each row's best pair fit
    minus its runner-up's); slot_margin (E x 2: the best fit minus that of the best pair that
    keeps the other slot's group and replaces this one; 2, the most a difference of correlations
    can be, where no such pair was a candidate); fit (E: the best pair's fit)."""

    assignment: np.ndarray
    margin: np.ndarray
    slot_margin: np.ndarray
    fit: np.ndarray


def _slot_margins(fit, pa, pb, j) -> np.ndarray:
    """rows x 2: for the chosen pair (pa[j], pb[j]) of each row, its fit minus the best fit of a
    candidate pair that holds the other chosen group and not this one."""
    import torch

    a_t, b_t = torch.as_tensor(pa, device=fit.device), torch.as_tensor(pb, device=fit.device)
    j_t = torch.as_tensor(j, device=fit.device)
    ca, cb = a_t.gather(1, j_t), b_t.gather(1, j_t)
    best = fit.gather(1, j_t)
    out = []
    for keep, drop in ((cb, ca), (ca, cb)):        # slot 0 replaced (keeps b), slot 1 replaced (keeps a)
        holds = (a_t == keep) | (b_t == keep)
        other = holds & (a_t != drop) & (b_t != drop)
        alt = torch.where(other, fit, torch.full_like(fit, -np.inf)).max(1, keepdim=True).values
        out.append(torch.nan_to_num(best - alt, nan=0.0, posinf=2.0)[:, 0])
    return torch.stack(out, 1).cpu().numpy()


def reassign(encryptions: np.ndarray, labels: np.ndarray, cluster_class: np.ndarray, images: np.ndarray,
             noise_mean: np.ndarray, *, candidates: int = 12, splits: tuple = (0.3, 0.5, 0.7),
             chunk_elements: int = 2 ** 24, device=None, features=None) -> Reassignment:
    """Each encryption's best label-consistent pair of groups under the current images.

    Candidates: one group of each labelled class (both of the one class, with the split of its
    coefficient tried over `splits`, when the label has a single entry); per class the
    `candidates` groups whose x^2 correlates best with e^2 (all of them when the class has no
    more). A pair's fit is the correlation over the pixels of L e^2 with L m^2, the predicted
    intensity (m = l_a x_a + l_b x_b + w mu) under L, a 4-neighbour Laplacian: the public
    patches' energy is smooth, the private images' edges are not, and correlation ignores offset
    and scale. `device`: a torch device or its name (None: CPU); `features`: the encryptions'
    `energy_features` on that device when the caller has them (rounds reuse one computation).
    Returns a `Reassignment`: the pairs, each row's margin (a confidence the attack turns into
    regression weights), each slot's margin and the pairs' fits (the decryption's choice of the
    group to show, `shown_by_fit`).
    """
    import torch

    E, n = len(encryptions), len(images)
    dev = torch.device(device or "cpu")
    shape = np.asarray(encryptions).shape[1:]
    y2 = energy_features(encryptions, dev) if features is None else features
    X = torch.as_tensor(np.asarray(images, np.float32).reshape(n, -1), device=dev)
    mu = torch.as_tensor(np.asarray(noise_mean, np.float32).reshape(-1), device=dev)
    P = X.shape[1]
    labels = np.asarray(labels, dtype=np.float32)
    sup = label_support(labels)
    cc = np.asarray(cluster_class, dtype=np.int64)
    w = public_weight(labels).astype(np.float32)
    unary = (y2 @ _unit_centred(_laplacian(X * X, shape)).T).cpu().numpy()   # E x n: corr(L e^2, L x_c^2)
    out = np.zeros((E, 2), dtype=np.int64)
    best = np.full(E, -np.inf, dtype=np.float32)
    margin = np.zeros(E, dtype=np.float32)
    slot_margin = np.zeros((E, 2), dtype=np.float32)

    def members(c, rows):
        """rows x m candidate clusters of class c (unknown-class clusters count as any class):
        all of them, or per row the `candidates` whose x^2 correlates best with e^2."""
        g = np.flatnonzero((cc == c) | (cc < 0))
        if len(g) <= candidates:
            return np.tile(g, (len(rows), 1))
        top = np.argsort(-unary[np.ix_(rows, g)], axis=1, kind="stable")[:, :candidates]
        return g[top]

    combos: dict = {}
    for e, classes in enumerate(map(tuple, (np.flatnonzero(r) for r in sup))):
        combos.setdefault(classes, []).append(e)
    for classes, rows in combos.items():
        rows = np.asarray(rows)
        cand = _candidate_pairs(classes, rows, members, labels, splits)
        if cand is None or not cand[0].shape[1]:
            continue
        pa, pb, coef = cand
        step = max(1, chunk_elements // (pa.shape[1] * P))
        for i in range(0, len(rows), step):
            r = rows[i: i + step]
            fit = _pair_fits(X, mu, y2[r], w[r], pa[i: i + step], pb[i: i + step], [(la[r], lb[r]) for la, lb in coef],
                             shape, dev)
            top2 = fit.topk(min(2, fit.shape[1]), dim=1)
            score, j = top2.values[:, 0], top2.indices[:, 0]
            j = j.cpu().numpy()[:, None]
            best[r] = score.cpu().numpy()
            if fit.shape[1] > 1:
                margin[r] = (top2.values[:, 0] - top2.values[:, 1]).cpu().numpy()
            slot_margin[r] = _slot_margins(fit, pa[i: i + step], pb[i: i + step], j)
            out[r, 0] = np.take_along_axis(pa[i: i + step], j, 1)[:, 0]
            out[r, 1] = np.take_along_axis(pb[i: i + step], j, 1)[:, 0]
    unset = ~np.isfinite(best)            # no candidate pair (a class without clusters): best two by x^2 alone
    if unset.any():
        out[unset] = np.argsort(-unary[unset], 1, kind="stable")[:, :2]
        slot_margin[unset] = 0.0
    return Reassignment(out, margin, slot_margin, np.where(unset, 0.0, best).astype(np.float32))


def bipartition(similarity: np.ndarray) -> np.ndarray:
    """Split a set of encryptions in two (a boolean mask) by the sign of the leading
    eigenvector of their centred similarity matrix (diagonal ignored): the spectral cut that
    separates the encryptions of two private images a group has merged."""
    A = np.asarray(similarity, dtype=np.float64).copy()
    off = ~np.eye(len(A), dtype=bool)
    A -= A[off].mean()
    A[~off] = 0.0
    return np.linalg.eigh(A)[1][:, -1] >= 0


def split_overfull(assignment: np.ndarray, cluster_class: np.ndarray, features, *, below: float,
                   above: float) -> tuple[np.ndarray, np.ndarray, list]:
    """The k-means repair of dead clusters. Reassignment has no capacity, so a group whose
    image blends two private images takes the encryptions of both (size ~2 E slots / n) while
    another group, whose image explains nothing, empties. Pair the groups under `below` times
    the mean group size (smallest first) with those over `above` times it (largest first),
    split each over-full group's encryptions in two (`bipartition` of the correlations of their
    `energy_features`, torch rows) and give the smaller half to the dead group, with the
    over-full group's class. The next regression gives both halves their own image and the
    next reassignment sorts out the rows the cut got wrong. Within one group the energy
    features cut better than the learned similarity: on the merged groups of an unseen
    Tiny-ImageNet release (docs/history.md, 2026-12-06) 0.81-0.96 of their rows fell on the
    side of their image, against 0.65-0.85 by the similarity network's embedding.
    Returns (assignment, cluster_class, [(dead group, over-full group, rows moved)])."""
    A = np.array(assignment, dtype=np.int64, copy=True)
    cc = np.array(cluster_class, dtype=np.int64, copy=True)
    n = len(cc)
    sizes = np.bincount(A.ravel(), minlength=n)
    mean = A.size / n
    dead = [int(c) for c in np.argsort(sizes, kind="stable") if sizes[c] < below * mean]
    full = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > above * mean]
    moves = []
    for d, g in zip(dead, full):
        rows = np.flatnonzero((A == g).any(1))
        z = features[rows]
        half = bipartition((z @ z.T).cpu().numpy())
        moved = rows[~half] if half.sum() >= len(half) / 2 else rows[half]
        A[moved] = np.where(A[moved] == g, d, A[moved])
        cc[d] = cc[g]
        moves.append((d, g, len(moved)))
    return A, cc, moves
