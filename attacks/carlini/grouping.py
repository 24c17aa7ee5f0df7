"""Stages 1-3 of the Carlini et al. attack (arXiv 2011.05315): from a public release to "which
private images does each encryption hold" -- up to a renaming of the private images.

    find_groups(view, cfg, aux) -> Grouping      (attacker side: never reads the key)
    evaluate_grouping(grouping, key) -> dict      (scorer side: pair AUC, precision@T, purity, ...)

Stage 1 (similarity.py) scores every pair of encryptions; stage 2 (clustering.py) finds one core
group per private image; stage 3 (assignment.py) gives every encryption its n_private_slots
groups. The groups number exactly view.n_private (= E // T).
"""
from __future__ import annotations

import dataclasses
import hashlib
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from attacks.carlini import assignment as asg
from attacks.carlini import clustering as clu
from attacks.carlini import similarity as sim
from hidebench.stage_cache import StageCache
from hidebench.types import HidebenchError, ImageSet, PublicView, SecretKey

SIMILARITIES = ("cnn", "pearson")
CLUSTERINGS = ("greedy", "spectral")
ASSIGNMENTS = ("flow", "greedy")
# Nonzero label entries are lambdas >= ~1e-3 in practice; below this a label entry is absent.
LABEL_EPS = 1e-6


@dataclass
class GroupingConfig:
    """Knobs of stages 1-3. Sizes relative to T (encryptions per private image) scale with the release.

    Similarity: `similarity` 'cnn' (embedding CNN trained on the attacker's own encryptions of
    aux data) or 'pearson' (correlation of |e|, no training). CNN: `width` channels in the first
    block (0: 16 on CPU, 32 on CUDA), `embed_dim`, `train_steps` Adam steps (0: 600 on CPU -- 1.5-2 min
    on 2 shared cores; 300 -> 600 steps measured precision@T 0.43 -> 0.48 on the CIFAR replica --
    and 3000 on CUDA, 0.64 there) of `batch_size` at `lr` (one-cycle), SupCon
    `temperature`; each round encrypts `train_images` aux images `train_T` times, a fresh round
    every `steps_per_round` steps. The similarity is (1 - w) cos(CNN) + w Pearson: the CNN trains
    with w = `pearson_weight` (so it learns a residual to Pearson); `blend` fixes w for scoring,
    -1 picks it from {0, .25, .5, .75, 1} by precision@T on a held-out attacker round.
    `query_expansion` k > 0: each embedding is averaged with its k nearest before scoring.
    `rerank` > 0: rescore each encryption's `rerank` best
    candidates with the paper's pairwise 6-channel model (`pair_steps` steps), blended with
    weight `rerank_weight`.
    Clustering: `clustering` 'greedy' (paper's clique growth: cliques of `core_frac`*T members,
    grown over each seed's `candidates_frac`*T nearest, `linkage` 'min'|'mean', a duplicate when
    its cross-similarity to an earlier clique is > `max_overlap` of the way from background to
    cohesion) or 'spectral' (kNN graph with `knn_frac`*T neighbours).
    Defaults (measured, see the FRONT report): spectral finds more distinct private images than
    the greedy cliques with a learned (noisy) similarity (CIFAR replica 0.87 vs 0.73), greedy
    wins with a near-perfect one (oracle pairs 1.00 vs 0.98); the flow beats the greedy top-1.6T
    assignment (0.54 vs 0.50 of memberships right).
    Assignment: `assignment` 'flow' (min-cost flow over each encryption's `flow_candidates` best
    groups; a group takes n_private_slots*T + `capacity_slack` sd encryptions before overflow
    costs; `class_slots`: a label naming n_private_slots classes gets one group of each) or
    'greedy' (each group takes its `greedy_frac`*T best, 1.6*50 = 80 in the paper);
    `row_norm`: z-score each encryption's group scores (encryptions similar to everything
    no longer crowd the groups' capacity); `refine` passes recompute the group cores from the
    assignment and assign again.
    """

    similarity: str = "cnn"
    width: int = 0
    embed_dim: int = 64
    train_steps: int = 0
    batch_size: int = 256
    lr: float = 3e-3
    temperature: float = 0.1
    train_images: int = 400
    train_T: int = 10
    steps_per_round: int = 50
    pearson_weight: float = 0.0
    query_expansion: int = 0
    blend: float = -1.0
    rerank: int = 0
    rerank_weight: float = 0.5
    pair_steps: int = 300
    clustering: str = "spectral"
    core_frac: float = 0.5
    candidates_frac: float = 2.0
    linkage: str = "mean"
    max_overlap: float = 0.5
    knn_frac: float = 1.0
    assignment: str = "flow"
    flow_candidates: int = 8
    capacity_slack: float = 2.0
    class_slots: bool = True
    greedy_frac: float = 1.6
    refine: int = 1
    row_norm: bool = False
    eval_anchors: int = 500
    device: str = "auto"

    def __post_init__(self):
        for name, allowed in (("similarity", SIMILARITIES), ("clustering", CLUSTERINGS),
                              ("assignment", ASSIGNMENTS), ("linkage", ("min", "mean"))):
            if getattr(self, name) not in allowed:
                raise HidebenchError(f"grouping.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("width", "train_steps"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise HidebenchError(f"grouping.{name} must be a non-negative integer (0 = auto), got {v!r}")
            setattr(self, name, int(v))
        for name in ("embed_dim", "batch_size", "train_images", "train_T",
                     "steps_per_round", "pair_steps", "flow_candidates", "eval_anchors"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise HidebenchError(f"grouping.{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("rerank", "refine", "query_expansion"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise HidebenchError(f"grouping.{name} must be a non-negative integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("lr", "temperature", "core_frac", "candidates_frac", "knn_frac", "greedy_frac"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise HidebenchError(f"grouping.{name} must be a positive number, got {v!r}")
        if not isinstance(self.class_slots, bool):
            raise HidebenchError(f"grouping.class_slots must be true or false, got {self.class_slots!r}")
        if not isinstance(self.row_norm, bool):
            raise HidebenchError(f"grouping.row_norm must be true or false, got {self.row_norm!r}")
        if not (isinstance(self.capacity_slack, (int, float)) and 0 <= self.capacity_slack < 100):
            raise HidebenchError(f"grouping.capacity_slack must lie in [0, 100), got {self.capacity_slack!r}")
        if not 0 <= self.pearson_weight < 1:
            raise HidebenchError(f"grouping.pearson_weight must lie in [0, 1), got {self.pearson_weight}")
        if not (self.blend == -1 or 0 <= self.blend <= 1):
            raise HidebenchError(f"grouping.blend must be -1 (auto) or lie in [0, 1], got {self.blend}")
        if not 0 <= self.rerank_weight <= 1:
            raise HidebenchError(f"grouping.rerank_weight must lie in [0, 1], got {self.rerank_weight}")
        if not 0 <= self.max_overlap < 1:
            raise HidebenchError(f"grouping.max_overlap must lie in [0, 1), got {self.max_overlap}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise HidebenchError(f"grouping.device must be auto, cpu or cuda[:N], got {self.device!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "GroupingConfig":
        from attacks.base import validate_config

        return validate_config(cls, d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Grouping:
    """Result of stages 1-3.

    assignment: E x n_private_slots int64 group ids in [0, n_clusters), distinct per row, the
    best-scoring group first (2 columns for cross-dataset releases).
    cluster_class: the class of each group's private image (from label support), -1 if unknown.
    pair_sample: what evaluate_grouping needs (similarity rows of sampled anchors, stage-2 cores).
    """

    assignment: np.ndarray
    n_clusters: int
    cluster_class: np.ndarray
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    pair_sample: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers

def _fingerprint_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.tobytes()).hexdigest()[:16] + f"-{a.shape}"


def _peak_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 1)


def _pack(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    flat = np.concatenate(groups).astype(np.int64) if groups else np.zeros(0, np.int64)
    return flat, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def check_view(view: PublicView) -> int:
    if not view.T:
        raise HidebenchError("the release does not state T (encryptions per private image); grouping needs it")
    E = len(view)
    n = view.n_private
    if E % view.T:
        raise HidebenchError(f"{E} encryptions is not a multiple of T={view.T}")
    if n < view.n_private_slots:
        raise HidebenchError(f"E // T = {n} private images, fewer than the {view.n_private_slots} in each encryption")
    support = view.labels > LABEL_EPS
    if not support.any(axis=1).all():
        bad = int((~support.any(axis=1)).sum())
        raise HidebenchError(f"{bad} encryptions have an all-zero label; labels must hold the private lambdas")
    return n


def true_similarity(key: SecretKey, rng: np.random.Generator) -> np.ndarray:
    """Oracle 'pairs': 1 for encryptions sharing a private image, 0 otherwise (+ tie-breaking noise)."""
    p = key.private_of()
    M = np.zeros((len(p), len(key.private)), dtype=np.float32)
    M[np.arange(len(p))[:, None], p] = 1.0
    S = ((M @ M.T) > 0).astype(np.float32) + 1e-3 * rng.random((len(p), len(p)), dtype=np.float32)
    S = (S + S.T) / 2
    np.fill_diagonal(S, -2.0)
    return S


# ----------------------------------------------------------------------------- stage 1

def _similarity(view, cfg, aux, pool, seed, cache, progress, timings) -> tuple[np.ndarray, dict]:
    """E x E similarity (diagonal -2) and stats; the CNN weights and embeddings are cached."""
    stats: dict = {"similarity": cfg.similarity}
    view_fp = _fingerprint_array(view.encryptions)
    if cfg.similarity == "pearson":
        t0 = time.perf_counter()
        S = sim.similarity_matrix(sim.query_expansion(sim.pearson_embedding(view.encryptions), cfg.query_expansion))
        timings["similarity_s"] = time.perf_counter() - t0
        return S, stats
    if aux is None or len(aux) == 0:
        raise HidebenchError("similarity 'cnn' needs auxiliary images (threat model aux); "
                             "use similarity='pearson' without")
    device = sim.pick_device(cfg.device)
    cuda = device.type == "cuda"
    cfg = dataclasses.replace(cfg, width=cfg.width or (32 if cuda else 16),
                              train_steps=cfg.train_steps or (3000 if cuda else 600))
    stats.update(width=cfg.width, train_steps=cfg.train_steps, device=str(device))
    model_cfg = {k: getattr(cfg, k) for k in ("width", "embed_dim", "train_steps", "batch_size", "lr", "temperature",
                                              "train_images", "train_T", "steps_per_round", "pearson_weight",
                                              "blend")}
    model_cfg.update(scheme=[view.k, view.mode, view.scheme, int(view.labels.shape[1])], seed=seed,
                     aux=[aux.source, aux.fingerprint, _fingerprint_array(aux.images), _fingerprint_array(aux.labels)],
                     pool=getattr(pool, "fingerprint", None), n_pool=len(getattr(pool, "regions", [])),
                     standins=None if pool is not None else "pink+augmented-aux-v2")
    if cfg.rerank:
        model_cfg.update(pair_steps=cfg.pair_steps)

    def train():
        rounds = max(1, cfg.train_steps // cfg.steps_per_round)
        data = sim.AttackerEncryptions(view, aux, n_images=cfg.train_images, T=cfg.train_T, pool=pool, seed=seed)
        model, losses = sim.train_embedder(data, width=cfg.width, dim=cfg.embed_dim, steps=cfg.train_steps,
                                           batch=cfg.batch_size, lr=cfg.lr, temperature=cfg.temperature,
                                           rounds=rounds, device=device, seed=seed,
                                           pearson_weight=cfg.pearson_weight, progress=progress)
        out = sim.state_to_arrays(model, "embed.")
        out["loss_embed"] = np.asarray(losses, dtype=np.float32)
        # Held-out attacker round (fresh lambdas, signs, patches): pick the Pearson blend.
        xv, mv = data.draw()
        keep = np.random.default_rng(seed).permutation(len(xv))[: 2000]
        xv, mv = xv[keep], mv[keep]
        zv = sim.embed(model, xv, device)
        pv = xv.reshape(len(xv), -1)
        pv = pv / np.maximum(np.linalg.norm(pv, axis=1, keepdims=True), 1e-6)
        t_val = max(1, int(round(mv.sum(0).mean())) // 2)
        w, val = sim.choose_blend(zv, pv, mv, t_val)
        out["blend"] = np.float32(w if cfg.blend < 0 else cfg.blend)
        out["val_grid"] = np.array(sorted(val), dtype=np.float32)
        out["val_precision"] = np.array([val[k] for k in sorted(val)], dtype=np.float32)
        if cfg.rerank:
            pm, pl = sim.train_pair_model(data, width=cfg.width, steps=cfg.pair_steps, batch=cfg.batch_size // 2,
                                          lr=cfg.lr, rounds=max(1, cfg.pair_steps // cfg.steps_per_round),
                                          device=device, seed=seed, progress=progress)
            out.update(sim.state_to_arrays(pm, "pair."))
            out["loss_pair"] = np.asarray(pl, dtype=np.float32)
        return out

    cache = cache or StageCache(None)
    t0 = time.perf_counter()
    weights = cache.get_or_compute("carlini_similarity_model", model_cfg, train)
    timings["similarity_train_s"] = time.perf_counter() - t0
    stats["similarity_model_cached"] = bool(cache.hits.get("carlini_similarity_model"))
    le = weights["loss_embed"]
    stats["embed_loss_first_last"] = [round(float(le[: 20].mean()), 4), round(float(le[-20:].mean()), 4)]
    stats["blend_pearson_weight"] = float(weights["blend"])
    stats["attacker_val_precision"] = {f"{float(k):g}": round(float(v), 4)
                                       for k, v in zip(weights["val_grid"], weights["val_precision"])}

    def score():
        feats = sim.abs_features(view.encryptions)
        model = sim.arrays_to_state(sim.build_embedder(cfg.width, cfg.embed_dim), weights, "embed.").to(device).eval()
        out = {"z": sim.embed(model, feats, device)}
        if cfg.rerank:
            zb = sim.blend_embedding(out["z"], sim.pearson_embedding(view.encryptions), float(weights["blend"]))
            S0 = sim.similarity_matrix(sim.query_expansion(zb, cfg.query_expansion))
            cand = clu.top_neighbours(S0, cfg.rerank)
            pm = sim.arrays_to_state(sim.build_pair_model(cfg.width), weights, "pair.").to(device).eval()
            out["cand"] = cand
            out["pair_logits"] = sim.pair_scores(pm, feats, np.arange(len(feats)), cand, device)
        return out

    t0 = time.perf_counter()
    score_cfg = {**model_cfg, "view": view_fp, "rerank": cfg.rerank, "qe": cfg.query_expansion if cfg.rerank else 0}
    sc = cache.get_or_compute("carlini_similarity_scores", score_cfg, score,
                              upstream=[cache.digests["carlini_similarity_model"]])
    zb = sim.blend_embedding(sc["z"], sim.pearson_embedding(view.encryptions), float(weights["blend"]))
    S = sim.similarity_matrix(sim.query_expansion(zb, cfg.query_expansion))
    if cfg.rerank:
        S = sim.rerank(S, sc["pair_logits"], sc["cand"], cfg.rerank_weight)
    timings["similarity_score_s"] = time.perf_counter() - t0
    stats["similarity_scores_cached"] = bool(cache.hits.get("carlini_similarity_scores"))
    return S, stats


# ----------------------------------------------------------------------------- entry point

def find_groups(view: PublicView, cfg: GroupingConfig | dict | None = None, aux: ImageSet | None = None, *,
                pool=None, seed: int = 0, cache: StageCache | None = None, progress: bool = True,
                true_pairs_key: SecretKey | None = None) -> Grouping:
    """Stages 1-3 (module docstring). `pool`: the public pool, only when the threat model grants
    it (otherwise aux images stand in for public patches in the attacker's own encryptions).
    `true_pairs_key`: oracle 'pairs' -- the similarity is replaced by the true sharing relation."""
    from tqdm import tqdm

    cfg = cfg if isinstance(cfg, GroupingConfig) else GroupingConfig.from_dict(cfg)
    n = check_view(view)
    E, T, slots = len(view), int(view.T), view.n_private_slots
    support = view.labels > LABEL_EPS
    timings: dict = {}
    rng = np.random.default_rng(seed)
    bar = tqdm(total=3, desc="carlini grouping", disable=not progress, leave=False)

    # Stage 1: similarity.
    if true_pairs_key is not None:
        if true_pairs_key.selection.shape[0] != E:
            raise HidebenchError("oracle key does not match the release (different number of encryptions)")
        t0 = time.perf_counter()
        S = true_similarity(true_pairs_key, rng)
        timings["similarity_s"] = time.perf_counter() - t0
        stats = {"similarity": "oracle_pairs"}
    else:
        S, stats = _similarity(view, cfg, aux, pool, seed, cache, progress, timings)
    timings["similarity_peak_rss_mb"] = _peak_mb()
    bar.update(1)

    # Stage 2: clustering (one core group per private image).
    t0 = time.perf_counter()
    core = max(2, int(round(cfg.core_frac * T)))
    cands = max(core, int(round(cfg.candidates_frac * T)))
    if cfg.clustering == "greedy":
        groups = clu.greedy_cliques(S, support, n, size=core, candidates=cands, max_overlap=cfg.max_overlap,
                                    linkage=cfg.linkage, seed=seed)
    else:
        groups = clu.spectral_clusters(S, support, n, knn=max(2, int(round(cfg.knn_frac * T))), core=core, seed=seed)
    found = len(groups)
    groups, added = clu.complete_clusters(S, support, groups, n, size=core, candidates=cands, linkage=cfg.linkage,
                                          seed=seed)
    cores = [g.copy() for g in groups]
    timings["clustering_s"] = time.perf_counter() - t0
    timings["clustering_peak_rss_mb"] = _peak_mb()
    stats.update(clustering=cfg.clustering, groups_found=found, groups_added=added, core_size=core)
    bar.update(1)

    # Stage 3: assignment (+ refinement passes with cores rebuilt from the assignment).
    t0 = time.perf_counter()
    cap = asg.capacity_for(T, slots, cfg.capacity_slack)
    for it in range(cfg.refine + 1):
        classes = np.array([clu.cluster_class(g, support, view.labels) for g in groups], dtype=np.int64)
        scores = asg.cluster_scores(S, groups)
        if cfg.row_norm:
            scores = asg.row_standardise(scores)
        allowed = asg.allowed_matrix(support, classes)
        if cfg.assignment == "flow":
            sc_ = asg.slot_classes(support, view.labels, classes, slots) if cfg.class_slots else None
            assign, astats = asg.flow_assign(scores, allowed, slots=slots, capacity=cap, candidates=cfg.flow_candidates,
                                             slot_class=sc_, classes=classes)
        else:
            assign, astats = asg.greedy_assign(scores, allowed, slots=slots,
                                               per_group=max(1, int(round(cfg.greedy_frac * T))))
        if it < cfg.refine:
            groups = asg.assignment_clusters(assign, scores, n, core=max(core, T))
            groups = [g if len(g) >= 2 else cores[c] for c, g in enumerate(groups)]
    # The classes the final pass assigned under (so every row's label holds its groups' classes).
    timings["assignment_s"] = time.perf_counter() - t0
    timings["assignment_peak_rss_mb"] = _peak_mb()
    stats.update(assignment=cfg.assignment, capacity=cap, refine=cfg.refine,
                 **{f"assignment_{k}": v for k, v in astats.items()},
                 group_sizes_min_max=[int(np.bincount(assign.ravel(), minlength=n).min()),
                                      int(np.bincount(assign.ravel(), minlength=n).max())])
    bar.update(1)
    bar.close()

    anchors = np.sort(rng.choice(E, size=min(cfg.eval_anchors, E), replace=False))
    flat, off = _pack(cores)
    pair_sample = {"anchors": anchors, "scores": S[anchors].astype(np.float32), "T": T,
                   "core_flat": flat, "core_offsets": off}
    return Grouping(assignment=assign, n_clusters=n, cluster_class=classes, stats=stats, timings=timings,
                    pair_sample=pair_sample)


# ----------------------------------------------------------------------------- evaluation

def _membership(key: SecretKey) -> np.ndarray:
    p = key.private_of()
    M = np.zeros((len(p), len(key.private)), dtype=bool)
    M[np.arange(len(p))[:, None], p] = True
    return M


def evaluate_grouping(grouping: Grouping, key: SecretKey) -> dict:
    """Stage metrics with the key (Hungarian matching of groups to private images).

    pair_auc / precision_at_T (and its base rate): similarity rows of the sampled anchors vs the
    true sharing relation. core_purity: mean fraction of a stage-2 core holding the core's
    majority image; core_images_found: fraction of private images that are some core's majority.
    Assignment (groups matched to images maximising co-membership): assignment_accuracy =
    fraction of (encryption, slot) memberships right; rows_all_correct; heavy_slot_accuracy =
    fraction of rows whose heavier-coefficient image is among their groups; group_purity /
    group_recall = precision / recall of each matched group's members; class_accuracy.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import roc_auc_score

    M = _membership(key)                           # E x n_priv
    E, n_priv = M.shape
    A = grouping.assignment
    if A.shape[0] != E:
        raise HidebenchError(f"grouping has {A.shape[0]} rows but the key {E} encryptions")
    ps = grouping.pair_sample
    out: dict = {}
    if "anchors" in ps and len(ps["anchors"]):
        anchors, S = ps["anchors"], ps["scores"]
        T = int(ps.get("T", max(1, E // n_priv)))
        share = (M[anchors].astype(np.float32) @ M.T.astype(np.float32)) > 0
        share[np.arange(len(anchors)), anchors] = False
        valid = np.ones_like(share)
        valid[np.arange(len(anchors)), anchors] = False
        y, s = share[valid], S[valid]
        out["pair_auc"] = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")
        Sx = np.where(valid, S, -np.inf)
        top = np.argsort(-Sx, axis=1)[:, :T]
        out["precision_at_T"] = float(np.take_along_axis(share, top, 1).mean())
        out["pair_base_rate"] = float(y.mean())
    if "core_flat" in ps:
        cores = _unpack(ps["core_flat"], ps["core_offsets"])
        maj = [int(np.argmax(M[c].sum(0))) if len(c) else -1 for c in cores]
        out["core_purity"] = float(np.mean([M[c, m].mean() for c, m in zip(cores, maj) if len(c)]))
        out["core_images_found"] = len({m for m in maj if m >= 0}) / n_priv

    C = grouping.n_clusters
    G = np.zeros((E, C), dtype=bool)
    G[np.arange(E)[:, None], A] = True
    co = G.T.astype(np.int64) @ M.astype(np.int64)  # C x n_priv co-membership
    r, c = linear_sum_assignment(-co)
    match = np.full(C, -1, dtype=np.int64)
    match[r] = c
    mapped = np.where(A >= 0, match[A], -1)      # E x slots private ids
    correct = np.take_along_axis(M, np.maximum(mapped, 0), 1) & (mapped >= 0)
    out["assignment_accuracy"] = float(correct.mean())
    out["rows_all_correct"] = float(correct.all(1).mean())
    # The image with the heavier coefficient (what a decryption shows): is it among the row's groups?
    priv = key.private_of()
    heavy = priv[np.arange(E), np.argmax(key.lambdas[:, : priv.shape[1]], axis=1)]
    out["heavy_slot_accuracy"] = float((mapped == heavy[:, None]).any(1).mean())
    sizes = G.sum(0)
    out["group_purity"] = float(np.mean([co[i, match[i]] / max(sizes[i], 1) for i in r]))
    out["group_recall"] = float(np.mean([co[i, match[i]] / max(M[:, match[i]].sum(), 1) for i in r]))
    cls = grouping.cluster_class
    out["class_accuracy"] = float(np.mean([cls[i] == key.private_labels[match[i]] for i in r]))
    out["cluster_to_private"] = match.tolist()
    return out
