"""Stage 3 of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.3): give every encryption
exactly n_private_slots groups.

`flow_assign` solves it as a min-cost flow (networkx network simplex): source -> encryption
(capacity n_private_slots), encryption -> group (capacity 1, cost = -score, only to the
encryption's `candidates` best label-consistent groups so the graph has O(E) edges),
group -> sink (capacity n_private_slots * T + 2 sd at cost 0 -- about the number of encryptions
holding one private image -- plus overflow at a penalty, so the flow is always feasible).
`greedy_assign` is the paper's simpler comparison: each group takes its `per_group` most
similar encryptions (80 for T = 50 in the paper), then rows are trimmed/filled to exactly
n_private_slots groups.
"""
from __future__ import annotations

import numpy as np

from hidebench.types import HidebenchError

# Integer cost resolution for network simplex (scores are O(1) similarities).
COST_SCALE = 10_000


def cluster_scores(S: np.ndarray, clusters: list[np.ndarray]) -> np.ndarray:
    """E x C mean similarity of every encryption to each group's members (itself excluded)."""
    E = len(S)
    M = np.zeros((E, len(clusters)), dtype=np.float32)
    for c, m in enumerate(clusters):
        M[m, c] = 1.0
    S0 = S.copy()
    np.fill_diagonal(S0, 0.0)
    tot = S0 @ M
    cnt = M.sum(0)[None, :] - M
    return (tot / np.maximum(cnt, 1)).astype(np.float32)


def row_standardise(scores: np.ndarray) -> np.ndarray:
    """Each encryption's group scores as z-scores over the groups."""
    mu = scores.mean(1, keepdims=True)
    sd = scores.std(1, keepdims=True)
    return ((scores - mu) / np.maximum(sd, 1e-8)).astype(np.float32)


def allowed_matrix(support: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """E x C: may encryption e hold group c's image? (c's class is in e's label; unknown: yes)."""
    known = classes >= 0
    out = np.ones((len(support), len(classes)), dtype=bool)
    out[:, known] = support[:, classes[known]]
    return out


def _candidates(scores: np.ndarray, allowed: np.ndarray, slots: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its m best allowed groups; rows with fewer than `slots` allowed get their best
    disallowed ones too (flagged), so every row can take `slots` groups."""
    C = scores.shape[1]
    m = min(max(m, slots), C)
    key = np.where(allowed, scores, scores - 1e6)      # allowed first, by score
    idx = np.argpartition(-key, m - 1, axis=1)[:, :m]
    idx = np.take_along_axis(idx, np.argsort(-np.take_along_axis(key, idx, 1), axis=1, kind="stable"), 1)
    keep = np.take_along_axis(allowed, idx, 1)
    keep[:, :slots] = True      # sorted allowed-first: only adds fill-ins where < slots are allowed
    return idx, keep


def capacity_for(T: int, slots: int, slack: float = 2.0) -> int:
    """Encryptions one private image may take: T as the made-for image, plus about T more over
    the other slots-1 private slots (uniform draws over the other images: ~binomial, standard
    deviation ~sqrt((slots-1) T)), plus `slack` standard deviations so that a true group of
    above-average size is not forced to shed members."""
    return int(slots * T + np.ceil(slack * np.sqrt(max(slots - 1, 0) * T)))


def slot_classes(support: np.ndarray, weights: np.ndarray, classes: np.ndarray, slots: int) -> np.ndarray:
    """E x slots class each slot must take, or -1: a label with exactly `slots` nonzero classes
    names one class per private image (heaviest first), when every such class has a group."""
    out = np.full((len(support), slots), -1, dtype=np.int64)
    have = np.zeros(support.shape[1], dtype=bool)
    have[classes[classes >= 0]] = True
    full = (support.sum(1) == slots) & np.all(~support | have[None, :], axis=1)
    rows = np.flatnonzero(full)
    if len(rows):
        order = np.argsort(-np.where(support[rows], weights[rows], -np.inf), axis=1, kind="stable")[:, :slots]
        out[rows] = order
    return out


def flow_assign(scores: np.ndarray, allowed: np.ndarray, *, slots: int, capacity: int, candidates: int,
                overflow_penalty: float = 1.0, slot_class: np.ndarray | None = None,
                classes: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Min-cost flow assignment (module docstring); returns (E x slots group ids, stats).

    slot_class (E x slots, from `slot_classes`) with `classes` (each group's class): a row whose
    label names one class per slot routes each unit of its flow through a per-slot node that
    only reaches groups of that slot's class -- one group per labelled class, as the label says.
    """
    import networkx as nx

    E, C = scores.shape
    if C < slots:
        raise HidebenchError(f"{C} groups cannot give every encryption {slots} distinct groups")
    idx, keep = _candidates(scores, allowed, slots, candidates)
    cand = np.take_along_axis(scores, idx, 1)
    hi = float(scores.max())
    # Disallowed fill-ins cost an extra penalty; overflow beyond capacity costs overflow_penalty
    # in score units (a full unit of similarity: only taken when nothing else fits).
    cost = np.rint((hi - cand + np.where(np.take_along_axis(allowed, idx, 1), 0.0, overflow_penalty)) * COST_SCALE)
    constrained = np.zeros(E, dtype=bool) if slot_class is None else (slot_class >= 0).all(1)
    G = nx.DiGraph()
    G.add_node("s", demand=-slots * E)
    G.add_node("t", demand=slots * E)
    G.add_edges_from(("s", e, {"capacity": slots, "weight": 0}) for e in range(E))
    rows, cols = np.nonzero(keep & ~constrained[:, None])
    G.add_edges_from(((int(e), ("c", int(idx[e, j])), {"capacity": 1, "weight": int(cost[e, j])})
                      for e, j in zip(rows, cols)))
    m = max(1, candidates // slots)
    for e in np.flatnonzero(constrained):
        for j in range(slots):
            grp = np.flatnonzero(classes == slot_class[e, j])
            best = grp[np.argsort(-scores[e, grp], kind="stable")[:m]]
            G.add_edge(int(e), ("e", int(e), j), capacity=1, weight=0)
            G.add_edges_from((("e", int(e), j), ("c", int(c)),
                              {"capacity": 1, "weight": int(np.rint((hi - scores[e, c]) * COST_SCALE))})
                             for c in best)
    pen = int(round(overflow_penalty * COST_SCALE))
    for c in range(C):
        G.add_edge(("c", c), "t", capacity=int(capacity), weight=0)
        G.add_edge(("c", c), ("o", c), capacity=slots * E, weight=pen)
        G.add_edge(("o", c), "t", capacity=slots * E, weight=0)
    try:
        flow = nx.network_simplex(G)[1]
    except nx.NetworkXUnfeasible as exc:  # only if a row has < slots candidates
        raise HidebenchError(f"assignment flow infeasible: {exc}") from exc
    out = np.empty((E, slots), dtype=np.int64)
    for e in range(E):
        hops = [flow[("e", e, j)] for j in range(slots)] if constrained[e] else [flow[e]]
        got = [c[1] for h in hops for c, f in h.items() if f > 0]
        if len(got) != slots or len(set(got)) != slots:
            raise HidebenchError(f"assignment flow gave encryption {e} groups {got}, expected {slots} distinct")
        got.sort(key=lambda c: -scores[e, c])
        out[e] = got
    over = sum(flow[("c", c)][("o", c)] for c in range(C))
    return out, {"edges": int(G.number_of_edges()), "overflow_units": int(over),
                 "rows_one_group_per_class": int(constrained.sum()),
                 "disallowed_used": int(sum(not allowed[e, c] for e in range(E) for c in out[e]))}


def greedy_assign(scores: np.ndarray, allowed: np.ndarray, *, slots: int, per_group: int) -> tuple[np.ndarray, dict]:
    """The paper's greedy comparison: each group takes its per_group best allowed encryptions;
    rows with more than `slots` keep their best, rows with fewer are filled with their best
    remaining allowed groups."""
    E, C = scores.shape
    key = np.where(allowed, scores, -np.inf)
    take = np.zeros((E, C), dtype=bool)
    per_group = min(per_group, E)
    top = np.argpartition(-key, per_group - 1, axis=0)[:per_group]
    take[top, np.arange(C)[None, :]] = True
    take &= allowed
    n_taken = take.sum(1)
    rank = np.where(take, scores + 1e6, np.where(allowed, scores, scores - 1e6))
    out = np.argsort(-rank, axis=1, kind="stable")[:, :slots].astype(np.int64)
    return out, {"rows_trimmed": int((n_taken > slots).sum()), "rows_filled": int((n_taken < slots).sum())}


def assignment_clusters(assignment: np.ndarray, scores: np.ndarray, C: int, core: int) -> list[np.ndarray]:
    """Per group, the `core` assigned encryptions scoring highest for it (for a refinement pass)."""
    out = []
    for c in range(C):
        m = np.flatnonzero((assignment == c).any(1))
        out.append(m[np.argsort(-scores[m, c], kind="stable")[:core]] if len(m) else m)
    return out
