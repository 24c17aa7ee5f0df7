"""Stage 2 of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.3): group the encryptions.

Every private image appears in about n_private_slots * T encryptions, and every encryption holds
n_private_slots private images, so the groups overlap. Both methods here find, per private image,
a *core* of encryptions that surely hold it; stage 3 (assignment) then gives every encryption its
n_private_slots groups.

- `greedy_cliques`: the paper's method. From a seed encryption, grow a clique by repeatedly adding
  the candidate with the best linkage (minimum, i.e. clique, or mean similarity) to all current
  members; discard a clique that overlaps one found before (a duplicate: both seeds held the
  same image). Seeds are taken least-covered first, strongest neighbourhood first.
- `spectral_clusters`: spectral clustering of the symmetrised k-nearest-neighbour graph, one
  cluster per private image (every encryption lands in the cluster of its heavier image, mostly).

Label support restricts both: a group's class must be in the label of every member (an
encryption's label is nonzero exactly at its private images' classes).
`complete_clusters` makes the count exactly n_clusters (drops the least cohesive extra groups,
grows new ones from the encryptions the found groups explain worst).
"""
from __future__ import annotations

import numpy as np

from hidebench.types import HidebenchError


def top_neighbours(S: np.ndarray, m: int) -> np.ndarray:
    """E x m indices of each row's m most similar other rows, best first (S's diagonal must be low)."""
    m = min(m, len(S) - 1)
    idx = np.argpartition(-S, m - 1, axis=1)[:, :m]
    order = np.argsort(-np.take_along_axis(S, idx, 1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, 1)


def cluster_class(members: np.ndarray, support: np.ndarray, weights: np.ndarray | None = None) -> int:
    """The class present in most members' labels (ties: larger summed label weight)."""
    counts = support[members].sum(0).astype(np.float64)
    if weights is not None:
        counts += 1e-6 * weights[members].sum(0)
    return int(np.argmax(counts)) if len(members) else -1


def _grow(S, seed, cand, support, size, linkage, member_mask=None):
    """Grow one group from `seed` over candidate rows `cand` (label-consistent with the group)."""
    members = [seed]
    cls = support[seed].copy()
    taken = np.zeros(len(cand), dtype=bool)
    taken |= cand == seed
    if member_mask is not None:
        taken |= member_mask[cand]
    link = S[seed, cand].astype(np.float64).copy()
    for _ in range(size - 1):
        ok = ~taken & (support[cand] & cls).any(axis=1)
        if not ok.any():
            break
        j = int(np.argmax(np.where(ok, link, -np.inf)))
        taken[j] = True
        e = int(cand[j])
        members.append(e)
        cls &= support[e]
        s = S[e, cand]
        link = np.minimum(link, s) if linkage == "min" else link + (s - link) / len(members)
    return np.asarray(members, dtype=np.int64)


def greedy_cliques(S: np.ndarray, support: np.ndarray, n_clusters: int, *, size: int, candidates: int,
                   max_overlap: float, linkage: str = "min", seed: int = 0) -> list[np.ndarray]:
    """The paper's greedy clique growth with de-duplication (see module docstring).

    size: members per clique; candidates: each seed's nearest neighbours considered for growth.
    De-duplication: a new clique is a duplicate of an earlier one when their cross-similarity
    lies more than max_overlap of the way from the background (the members' mean similarity to
    the encryptions whose label holds the clique's class) to the cliques' own cohesion -- two
    cores of one private image are about as similar to each other as within themselves, cores
    of different images (even sharing an encryption or two) stay near the background. (Member
    overlap alone misses duplicates: an image's ~2T encryptions hold several disjoint cores.)
    Every clique marks as covered the
    encryptions linked (in the `candidates`-nearest-neighbour graph) to at least half as many
    of its members as its members are among themselves; seeds come from the least-covered
    encryptions, strongest neighbourhood first. Returns up to n_clusters groups (fewer when
    the seeds run out).
    """
    if linkage not in ("min", "mean"):
        raise HidebenchError(f"clique linkage must be 'min' or 'mean', got {linkage!r}")
    E = len(S)
    rng = np.random.default_rng(seed)
    nbr = top_neighbours(S, candidates)
    # Seed priority: a strong neighbourhood (mean similarity to the nearest `size`) marks an
    # encryption dominated by one private image, which makes a clean seed.
    strength = np.take_along_axis(S, nbr[:, : max(1, size - 1)], 1).mean(1) + 1e-9 * rng.random(E)
    A = np.zeros((E, E), dtype=bool)
    A[np.arange(E)[:, None], nbr] = True
    A |= A.T
    clusters: list[np.ndarray] = []
    coh: list[float] = []
    bgs: list[float] = []
    s_link = np.zeros((E, 0), dtype=np.float32)   # E x found: mean similarity to each clique
    # Background: each encryption's mean similarity to the encryptions whose label holds class k
    # (same-class images look alike, so the background of a class-k group is class-local).
    S0 = S.copy()
    np.fill_diagonal(S0, 0.0)
    sup = support.astype(np.float32)
    class_bg = (S0 @ sup) / np.maximum(sup.sum(0, keepdims=True) - sup, 1)   # E x n_classes
    del S0
    covered = np.zeros(E, dtype=np.int64)
    tried = np.zeros(E, dtype=bool)
    while len(clusters) < n_clusters:
        free = np.flatnonzero(~tried)
        if not len(free):
            break
        low = free[covered[free] == covered[free].min()]
        s = int(low[np.argmax(strength[low])])
        tried[s] = True
        g = _grow(S, s, nbr[s], support, size, linkage)
        if len(g) < max(2, size // 2):
            continue
        sub = A[np.ix_(g, g)]
        d_g = float((sub.sum() - np.trace(sub)) / max(len(g) * (len(g) - 1), 1))
        c_g, b_g = cohesion(S, g), float(class_bg[g, cluster_class(g, support)].mean())
        if clusters:
            cross = s_link[g].mean(0)                          # mean S between g and each clique
            bg = (b_g + np.asarray(bgs)) / 2
            ref = np.minimum(c_g, np.asarray(coh)) - bg
            if np.any(cross - bg > max_overlap * np.maximum(ref, 1e-9)):
                continue
        clusters.append(g)
        coh.append(c_g)
        bgs.append(b_g)
        to_g = A[:, g].mean(1)
        covered[(to_g >= 0.5 * d_g)] += 1
        s_link = np.concatenate([s_link, S[:, g].mean(1, keepdims=True)], axis=1)
    return clusters


def spectral_clusters(S: np.ndarray, support: np.ndarray, n_clusters: int, *, knn: int, core: int,
                      seed: int = 0) -> list[np.ndarray]:
    """Spectral clustering of the kNN graph; each cluster is cut to its `core` most central
    label-consistent members (those most similar to the rest of the cluster)."""
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    E = len(S)
    nbr = top_neighbours(S, knn)
    w = np.take_along_axis(S, nbr, 1)
    w = np.maximum(w - w.min(), 1e-6)          # positive affinities, order kept
    A = sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(E), nbr.shape[1]), nbr.ravel())), shape=(E, E))
    A = A.maximum(A.T)
    k = min(n_clusters, E - 1)
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr", random_state=seed)
    lab = sc.fit_predict(A)
    out = []
    for c in range(k):
        m = np.flatnonzero(lab == c)
        if len(m) < 2:
            continue
        cls = cluster_class(m, support)
        m = m[support[m, cls]]
        if len(m) < 2:
            continue
        sub = S[np.ix_(m, m)].copy()
        np.fill_diagonal(sub, 0.0)
        cen = sub.sum(1) / max(len(m) - 1, 1)
        out.append(m[np.argsort(-cen, kind="stable")[:core]])
    return out


def cohesion(S: np.ndarray, members: np.ndarray) -> float:
    sub = S[np.ix_(members, members)].astype(np.float64)
    n = len(members)
    return float((sub.sum() - np.trace(sub)) / max(n * (n - 1), 1))


def complete_clusters(S: np.ndarray, support: np.ndarray, clusters: list[np.ndarray], n_clusters: int, *,
                      size: int, candidates: int, linkage: str, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Exactly n_clusters groups: drop the least cohesive extras, or grow new groups from the
    encryptions the existing groups explain worst (no de-duplication then). Returns (groups,
    number added)."""
    clusters = [np.asarray(c, dtype=np.int64) for c in clusters if len(c)]
    if len(clusters) > n_clusters:
        coh = np.array([cohesion(S, c) for c in clusters])
        keep = np.sort(np.argsort(-coh, kind="stable")[:n_clusters])
        return [clusters[i] for i in keep], 0
    added = 0
    nbr = top_neighbours(S, candidates)
    rng = np.random.default_rng(seed)
    best = np.full(len(S), -np.inf)
    for c in clusters:
        best = np.maximum(best, S[:, c].mean(1))
    if not clusters:
        best = rng.random(len(S))          # nothing found at all: random seeds
    while len(clusters) < n_clusters:
        s = int(np.argmin(best))
        best[s] = np.inf                   # never the same seed twice
        g = _grow(S, s, nbr[s], support, size, linkage)
        clusters.append(g)
        best = np.maximum(best, S[:, g].mean(1))
        added += 1
    return clusters, added
