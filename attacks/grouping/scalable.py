"""Stages 1-3 of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.2-5.3) for large releases:
the grouping without an E x E similarity matrix.

The similarity of every scoring method here is a dot product of embedding rows F (E x d, unit
rows: the CNN's embedding blended with the Pearson rows, `similarity.release_embedding`), so
everything the dense path reads from S has a form that never holds E x E numbers:

- neighbours: each row's m most similar label-consistent rows, computed in row blocks
  (O(E^2 d) multiply-adds in BLAS, O(E m) memory);
- cores: the dense path's spectral clustering of the kNN graph, one class at a time (the rows
  whose label holds class c, into that class's share of the images: `spectral_cores`), or
  k-means on the unit rows F (`kmeans_cores`); each cluster cut to the `core` members nearest
  its centre;
- group scores: mean similarity to a group's members = F . (sum of the members' rows), an
  E x C product;
- assignment: the min-cost flow's capacities enforced by prices instead (Lagrangian dual
  ascent on the capacity constraints: each row takes its best groups at the current prices,
  over-full groups get dearer), O(E m) per round where network simplex on E*m edges is
  superlinear and pure Python.

The stage output is the dense path's `Grouping`, so stages 4-5 and the evaluation are shared.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.grouping.assignment import _candidates
from hidebench.attacks.grouping.clustering import cluster_class
from hidebench.attacks.grouping.config import GroupingConfig
from hidebench.attacks.grouping.groups import Grouping, group_release
from hidebench.progress import bar
from hidebench.types import HidebenchError, PublicView

ROW_BLOCK = 2048
# k-means runs on the embedding's top principal directions: a Lloyd round costs E n KMEANS_DIMS
# instead of E n d (d = 3136 with the Pearson rows blended in).
KMEANS_DIMS = 128


def neighbours(F: np.ndarray, m: int, support: np.ndarray | None = None, *,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(E x m indices, E x m similarities) of each row's m most similar other rows, best first;
    with `support` (E x classes bool) only rows whose labels share a class (only those can
    share a private image)."""
    E = len(F)
    m = min(m, E - 1)
    idx = np.empty((E, m), dtype=np.int64)
    val = np.empty((E, m), dtype=np.float32)
    sup = None if support is None else support.astype(np.float32)
    for r0 in bar(range(0, E, ROW_BLOCK), enabled=progress, desc="neighbours", leave=False):
        r1 = min(E, r0 + ROW_BLOCK)
        S = F[r0:r1] @ F.T
        S[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        if sup is not None:
            S[(sup[r0:r1] @ sup.T) == 0] = -np.inf
        top = np.argpartition(-S, m - 1, axis=1)[:, :m]
        v = np.take_along_axis(S, top, 1)
        order = np.argsort(-v, axis=1, kind="stable")
        idx[r0:r1] = np.take_along_axis(top, order, 1)
        val[r0:r1] = np.take_along_axis(v, order, 1)
    return idx, val


def expand_queries(F: np.ndarray, k: int, support: np.ndarray, alpha: float = 3.0) -> np.ndarray:
    """`similarity.query_expansion` over the label-consistent neighbours."""
    if k <= 0:
        return F
    nbr, sim = neighbours(F, k, support)
    w = np.maximum(np.nan_to_num(sim, neginf=0.0), 0.0) ** alpha
    out = F + np.einsum("ek,ekd->ed", w, F[nbr])
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def images_per_class(support: np.ndarray, n: int) -> np.ndarray:
    """How many of the n private images each class holds, from the labels alone: an encryption
    whose label names one class holds two of its images, one naming two classes one of each,
    and every image fills about as many slots (2T); the shares rounded to sum to n."""
    single = support.sum(1) == 1
    slots = 2 * (support & single[:, None]).sum(0) + (support & ~single[:, None]).sum(0)
    est = slots * n / max(slots.sum(), 1)
    out = np.floor(est).astype(np.int64)
    out[np.argsort(-(est - out), kind="stable")[: n - out.sum()]] += 1
    return out


def spectral_cores(F: np.ndarray, support: np.ndarray, n: int, *, knn: int, core: int, seed: int = 0,
                   progress: bool = False) -> tuple[list[np.ndarray], dict]:
    """Stage 2 class by class: spectral clustering of the kNN graph of the rows whose label holds
    class c (`neighbours` within them: O(rows * knn) memory) into that class's share of the n
    images (`images_per_class`), each cluster cut to the `core` members most similar to its
    centre. Among 1000 images k-means on F mixes images (n_priv = 1000, T = 50: core purity
    0.60, images found 0.76); the class-local graph holds an image's encryptions far denser
    than the rest (0.73, 0.84), the dense path's spectral clustering at a size it manages."""
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    per_class = images_per_class(support, n)
    groups: list[np.ndarray | None] = []
    for c in bar(np.flatnonzero(per_class), enabled=progress, desc="clustering classes", leave=False):
        rows, want = np.flatnonzero(support[:, c]), int(per_class[c])
        if len(rows) <= 2 * want:                      # too few rows to cluster: left to the fill-in
            groups += [None] * want
            continue
        nbr, sim = neighbours(F[rows], min(knn, len(rows) - 1))
        w = np.maximum(sim - sim.min(), 1e-6)          # positive affinities, order kept
        A = sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(len(rows)), nbr.shape[1]), nbr.ravel())),
                              shape=(len(rows), len(rows)))
        lab = np.zeros(len(rows), dtype=np.int64)
        if want > 1:
            lab = SpectralClustering(n_clusters=want, affinity="precomputed", assign_labels="cluster_qr",
                                     eigen_solver="lobpcg", random_state=seed).fit_predict(A.maximum(A.T))
        for k in range(want):
            m = rows[lab == k]
            groups.append(m[np.argsort(-(F[m] @ F[m].mean(0)), kind="stable")[:core]] if len(m) >= 2 else None)
    groups += [None] * (n - len(groups))
    missing = _fill_missing(F, support, groups, core)
    return groups, {"clustering": "spectral_per_class", "groups_added": missing}


def kmeans_cores(F: np.ndarray, support: np.ndarray, n: int, *, core: int, seed: int = 0,
                 iters: int = 30) -> tuple[list[np.ndarray], dict]:
    """Stage 2: exactly n core groups from k-means on the unit rows F, projected on their top
    KMEANS_DIMS principal directions (k-means++ seeding, `iters` Lloyd rounds); each cut to
    the `core` label-consistent members most similar to its centre."""
    from sklearn.cluster import KMeans
    from sklearn.utils.extmath import randomized_svd

    X = F
    if F.shape[1] > KMEANS_DIMS:
        _, _, Vt = randomized_svd(F, KMEANS_DIMS, random_state=seed)
        X = F @ Vt.T.astype(np.float32)
    km = KMeans(n_clusters=n, n_init=1, max_iter=iters, random_state=seed).fit(X)
    lab = km.labels_
    groups: list[np.ndarray | None] = []
    for c in range(n):
        m = np.flatnonzero(lab == c)
        if len(m):
            m = m[support[m, cluster_class(m, support)]]
        centre = F[m].mean(0) if len(m) else None
        groups.append(m[np.argsort(-(F[m] @ centre), kind="stable")[:core]] if len(m) >= 2 else None)
    missing = _fill_missing(F, support, groups, core)
    return groups, {"clustering": "kmeans", "kmeans_iterations": int(km.n_iter_), "groups_added": missing}


def _fill_missing(F: np.ndarray, support: np.ndarray, groups: list, core: int) -> int:
    """Replace each None in `groups` (a cluster of fewer than 2 label-consistent members) by the
    neighbourhood of the row the other groups explain worst; returns how many."""
    missing = [c for c, g in enumerate(groups) if g is None]
    if missing:
        sums = np.stack([F[g].sum(0) if g is not None else np.zeros(F.shape[1], np.float32) for g in groups])
        best = (F @ sums.T).max(1)
        for c in missing:
            e = int(np.argmin(best))
            best[e] = np.inf
            s = F @ F[e]
            s[e] = -np.inf
            s[~(support & support[e]).any(1)] = -np.inf
            groups[c] = np.concatenate([[e], np.argsort(-s, kind="stable")[: core - 1]])
    return len(missing)


def group_scores(F: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """E x C mean similarity of every row to each group's members (itself excluded): the dense
    `assignment.cluster_scores` as one E x d by d x C product."""
    E, C = len(F), len(groups)
    sums = np.zeros((C, F.shape[1]), dtype=np.float64)
    sizes = np.zeros(C)
    for c, m in enumerate(groups):
        sums[c] = F[m].sum(0)
        sizes[c] = len(m)
    tot = F @ sums.T.astype(np.float32)
    cnt = np.broadcast_to(sizes, (E, C)).copy()
    self_sim = (F * F).sum(1)
    for c, m in enumerate(groups):          # a member's own row is not part of its score
        tot[m, c] -= self_sim[m]
        cnt[m, c] -= 1
    return (tot / np.maximum(cnt, 1)).astype(np.float32)


def price_assign(scores: np.ndarray, allowed: np.ndarray, *, slots: int, capacity: int, candidates: int,
                 overflow_penalty: float = 1.0, slot_class: np.ndarray | None = None,
                 classes: np.ndarray | None = None, rounds: int = 300) -> tuple[np.ndarray, dict]:
    """Stage 3: every row takes `slots` distinct groups among its `candidates` best allowed ones
    (a row whose label names one class per slot, `slot_class`: one group of each class, among
    the candidates // slots best of that class), maximising score minus the groups' prices; a
    group over `capacity` gets dearer by subgradient steps (Lagrangian relaxation of the
    flow's capacities, `rounds` rounds with a step decaying as 1 / sqrt(round)). Disallowed
    fill-ins cost `overflow_penalty`, as in the flow. Returns (E x slots ids, best first, stats)."""
    E, C = scores.shape
    if C < slots:
        raise HidebenchError(f"{C} groups cannot give every encryption {slots} distinct groups")
    idx, keep = _candidates(scores, allowed, slots, candidates)
    val = np.take_along_axis(scores, idx, 1) - np.where(np.take_along_axis(allowed, idx, 1), 0.0, overflow_penalty)
    val = np.where(keep, val, -np.inf).astype(np.float32)
    constrained = np.zeros(E, dtype=bool) if slot_class is None else (slot_class >= 0).all(1)
    per = max(1, candidates // slots)
    cons_rows = np.flatnonzero(constrained)
    slot_idx = np.full((len(cons_rows), slots, per), -1, dtype=np.int64)
    for j in range(slots):
        for k in np.unique(slot_class[cons_rows, j]) if len(cons_rows) else []:
            r = np.flatnonzero(slot_class[cons_rows, j] == k)
            grp = np.flatnonzero(classes == k)
            sub = scores[np.ix_(cons_rows[r], grp)]
            q = min(per, len(grp))
            top = np.argpartition(-sub, q - 1, axis=1)[:, :q]
            slot_idx[r, j, :q] = grp[top]
    slot_val = np.where(slot_idx >= 0, scores[cons_rows[:, None, None], np.maximum(slot_idx, 0)], -np.inf)
    free = np.flatnonzero(~constrained)
    step0 = float(np.std(val[np.isfinite(val)])) if np.isfinite(val).any() else 1.0

    def choose(price):
        out = np.empty((E, slots), dtype=np.int64)
        u = val[free] - price[idx[free]]
        top = np.argpartition(-u, slots - 1, axis=1)[:, :slots]
        out[free] = np.take_along_axis(idx[free], top, 1)
        if len(cons_rows):
            us = slot_val - price[np.maximum(slot_idx, 0)]
            out[cons_rows] = np.take_along_axis(slot_idx, us.argmax(2)[..., None], 2)[..., 0]
        return out

    price = np.zeros(C)
    for t in range(rounds):
        load = np.bincount(choose(price).ravel(), minlength=C)
        price = np.maximum(price + step0 / np.sqrt(t + 1) * (load - capacity) / capacity, 0.0)
    out = choose(price)
    out = np.take_along_axis(out, np.argsort(-np.take_along_axis(scores, out, 1), axis=1, kind="stable"), 1)
    load = np.bincount(out.ravel(), minlength=C)
    return out, {"overflow_units": int(np.maximum(load - capacity, 0).sum()),
                 "rows_one_group_per_class": int(constrained.sum()),
                 "disallowed_used": int((~np.take_along_axis(allowed, out, 1)).sum()),
                 "price_max": float(price.max())}


def find_groups_scalable(view: PublicView, cfg: GroupingConfig, n: int, *, F: np.ndarray, seed: int = 0,
                         anchor_rng: np.random.Generator | None = None, rescore=None,
                         progress: bool = False) -> Grouping:
    """Stages 2-3 on the embedding F (stage 1), with the dense path's output (`Grouping`); the
    cores from `spectral_cores` (clustering.method 'spectral') or `kmeans_cores` ('kmeans');
    rescore: see `grouping.assign_groups`."""
    acfg = cfg.assignment
    if acfg.method != "flow" or acfg.row_norm:
        raise HidebenchError("the scalable grouping (releases over carlini.dense_max encryptions) assigns by "
                             "prices in place of the flow: set assignment.method = 'flow' and row_norm = false")

    def cores_of(support, T):
        core = max(2, int(round(cfg.clustering.core_frac * T)))
        if cfg.clustering.method == "spectral":
            cores, stats = spectral_cores(F, support, n, knn=max(2, int(round(cfg.clustering.knn_frac * T))),
                                          core=core, seed=seed, progress=progress)
        else:
            cores, stats = kmeans_cores(F, support, n, core=core, seed=seed)
        return cores, {**stats, "core_size": core}

    def rows_of(anchors):
        rows = F[anchors] @ F.T
        rows[np.arange(len(anchors)), anchors] = -2.0
        return rows

    g = group_release(view, cfg, n, cores_of=cores_of, scores_of=lambda groups: group_scores(F, groups),
                      rows_of=rows_of, flow=price_assign, seed=seed, anchor_rng=anchor_rng, rescore=rescore)
    g.stats["assignment"] = "prices"
    return g
