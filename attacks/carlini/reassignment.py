"""Regression-driven reassignment for the Carlini et al. attack (arXiv 2011.05315): re-choose
each encryption's pair of groups from the images the regression recovered, an EM-style step
in the spirit of k-means. Repeating regression and reassignment pools the evidence of each
group's encryptions, which one encryption alone gives only weakly at k = 6.

Cross-dataset InstaHide only (two private slots): the label names the classes of the two
private images and their coefficients, so only label-consistent pairs are candidates.
"""
from __future__ import annotations

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


def reassign(encryptions: np.ndarray, labels: np.ndarray, cluster_class: np.ndarray, images: np.ndarray,
             noise_mean: np.ndarray, *, candidates: int = 12, splits: tuple = (0.3, 0.5, 0.7),
             chunk_elements: int = 2 ** 24, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Each encryption's best label-consistent pair of groups under the current images.

    Candidates: one group of each labelled class (both of the one class, with the split of its
    coefficient tried over `splits`, when the label has a single entry); per class the
    `candidates` groups whose x^2 correlates best with e^2 (all of them when the class has no
    more). A pair's fit is the correlation over the pixels of L e^2 with L m^2, the predicted
    intensity (m = l_a x_a + l_b x_b + w mu) under L, a 4-neighbour Laplacian: the public
    patches' energy is smooth, the private images' edges are not, and correlation ignores offset
    and scale. `device`: a torch device or its name (None: CPU).
    Returns (E x 2 group ids, E margins: each row's best fit minus its runner-up's, a confidence
    the attack turns into regression weights).
    """
    import torch

    E, n = len(encryptions), len(images)
    dev = torch.device(device or "cpu")
    shape = np.asarray(encryptions).shape[1:]
    y2 = _unit_centred(_laplacian(torch.as_tensor(np.asarray(encryptions, np.float32).reshape(E, -1) ** 2,
                                                 device=dev), shape))
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
            out[r, 0] = np.take_along_axis(pa[i: i + step], j, 1)[:, 0]
            out[r, 1] = np.take_along_axis(pb[i: i + step], j, 1)[:, 0]
    unset = ~np.isfinite(best)            # no candidate pair (a class without clusters): best two by x^2 alone
    if unset.any():
        out[unset] = np.argsort(-unary[unset], 1, kind="stable")[:, :2]
    return out, margin
