"""Stage 3 of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.3): give every encryption
exactly n_private_slots groups.

`flow_assign` solves it as a min-cost flow (networkx network simplex): source -> encryption
(capacity n_private_slots), encryption -> group (capacity 1, cost = -score, only to the
encryption's `candidates` best label-consistent groups so the graph has O(E) edges),
group -> sink (capacity n_private_slots * T at cost 0 -- the expected number of encryptions
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


def capacity_for(T: int, slots: int) -> int:
    """Expected encryptions per private image: T as the made-for image plus, in each of the
    other slots-1 private slots, about T more (uniform draws over the other images)."""
    return int(slots * T)


def flow_assign(scores: np.ndarray, allowed: np.ndarray, *, slots: int, capacity: int, candidates: int,
                overflow_penalty: float = 1.0) -> tuple[np.ndarray, dict]:
    """Min-cost flow assignment (module docstring); returns (E x slots group ids, stats)."""
    import networkx as nx

    E, C = scores.shape
    if C < slots:
        raise HidebenchError(f"{C} groups cannot give every encryption {slots} distinct groups")
    idx, keep = _candidates(scores, allowed, slots, candidates)
    cand = np.take_along_axis(scores, idx, 1)
    hi = float(cand.max())
    # Disallowed fill-ins cost an extra penalty; overflow beyond capacity costs overflow_penalty
    # in score units (a full unit of similarity: only taken when nothing else fits).
    cost = np.rint((hi - cand + np.where(np.take_along_axis(allowed, idx, 1), 0.0, overflow_penalty)) * COST_SCALE)
    G = nx.DiGraph()
    G.add_node("s", demand=-slots * E)
    G.add_node("t", demand=slots * E)
    G.add_edges_from((("s", e, {"capacity": slots, "weight": 0}) for e in range(E)))
    rows, cols = np.nonzero(keep)
    G.add_edges_from(((int(e), ("c", int(idx[e, j])), {"capacity": 1, "weight": int(cost[e, j])})
                      for e, j in zip(rows, cols)))
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
        got = [c[1] for c, f in flow[e].items() if f > 0]
        if len(got) != slots:
            raise HidebenchError(f"assignment flow gave encryption {e} {len(got)} groups, expected {slots}")
        got.sort(key=lambda c: -scores[e, c])
        out[e] = got
    over = sum(flow[("c", c)][("o", c)] for c in range(C))
    return out, {"edges": int(G.number_of_edges()), "overflow_units": int(over),
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
