"""The grouping as two cached stages (hidebench.pipeline) that any release attack runs:

    similarity_model  the similarity network, trained on the attacker's own encryptions of its
                      aux data (similarity.method 'cnn' or 'comparative', no 'pairs'/'assignment'
                      oracle)
    grouping          similarity -> clustering -> assignment (groups.py; scalable.py above
                      grouping.dense_max encryptions), or the key's membership under oracle
                      'assignment'

carlini runs them before its regression, the decoders before their fusion, fdn before its
fusion network: the stage names, keys and seeds are the same for all, so one stage cache serves
every attack on a release. `GroupingInputs` is what they read: the release, the grouping's
config, the execution context, the granted oracle parts and the attacker's data, loaded once.
"""
from __future__ import annotations

import time

import numpy as np

from hidebench.attacks.attacker_data import attacker_pool, load_aux
from hidebench.attacks.grouping.config import GroupingConfig
from hidebench.attacks.grouping.group_model import group_rescorer
from hidebench.attacks.grouping.groups import Grouping, find_groups, oracle_grouping, true_similarity
from hidebench.attacks.grouping.membership import label_support, membership_matrix
from hidebench.attacks.grouping.scalable import expand_queries, find_groups_scalable
from hidebench.attacks.grouping.similarity import (
    SimilarityModel,
    release_embedding,
    release_similarity,
    train_similarity_model,
)
from hidebench.context import ExecutionContext
from hidebench.pipeline import Stage, expect, stage_seed
from hidebench.stage_cache import arrays_digest
from hidebench.threat import FROM_RECIPE, Membership, ReleaseThreatModel
from hidebench.types import HidebenchError, ImageSet, PublicView


class GroupingInputs:
    """What the grouping stages read. threat: the resolved threat model (its aux source and
    public pool); pairs / assignment: the oracle parts granted (None otherwise); attack: who
    asks (error messages). The aux images and the attacker's pool are loaded on first use."""

    def __init__(self, view: PublicView, grouping: GroupingConfig, ctx: ExecutionContext, n_private: int, *,
                 threat: ReleaseThreatModel | None = None, pairs: Membership | None = None,
                 assignment: Membership | None = None, attack: str = "the grouping"):
        self.view, self.grouping, self.ctx, self.n_private = view, grouping, ctx, n_private
        self.threat = threat if threat is not None else ReleaseThreatModel(aux=None, public_pool=False)
        self.pairs, self.assignment, self.attack = pairs, assignment, attack
        self.timings: dict = {}
        self._memo: dict = {}

    def once(self, name: str, make):
        """make(), computed on the first call for `name` and kept (what a run loads once: the aux
        images, the pool, digests)."""
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]

    def seed(self, stage: str) -> int:
        return stage_seed(self.ctx.seed, stage)

    @property
    def device(self):
        return self.once("device", self.ctx.torch_device)

    @property
    def view_digest(self) -> str:
        v = self.view
        return self.once("view_digest", lambda: arrays_digest({
            "encryptions": v.encryptions, "labels": v.labels, "scheme": np.asarray([v.scheme, v.mode]),
            "k_T": np.asarray([v.k, v.T or 0])}))

    @property
    def aux_spec(self) -> str | None:
        return self.threat.aux

    @property
    def pool_config(self) -> dict | None:
        return dict(self.threat.pool) if self.threat.public_pool and self.threat.pool else None

    def aux(self) -> ImageSet | None:
        """The granted aux images (at most grouping.aux_max), None when none are granted."""
        if not self.aux_spec:
            return None

        def load():
            t0 = time.perf_counter()
            aux = load_aux(self.aux_spec, self.ctx, self.grouping.aux_max, needed_for=self.attack)
            self.timings["load_aux_s"] = time.perf_counter() - t0
            return aux

        return self.once("aux", load)

    def aux_digest(self) -> str | None:
        aux = self.aux()
        return None if aux is None else self.once("aux_digest", lambda: arrays_digest(
            {"images": aux.images, "labels": aux.labels, "source": np.asarray(aux.source)}))

    def pool(self):
        return self.once("pool", lambda: attacker_pool(self.threat, self.ctx, self.seed("pool"),
                                                        screens=self.grouping.similarity.rounds.pool_draws))

    @property
    def scalable(self) -> bool:
        """The scalable path (grouping.dense_max): no E x E matrix."""
        return len(self.view) > self.grouping.dense_max

    @property
    def group_steps(self) -> int:
        """Training steps of the second graph's group model (0: none; InstaHide only)."""
        return self.grouping.similarity.group.resolved_steps if self.view.scheme == "instahide" else 0

    def oracle_digest(self, part: str) -> str | None:
        o = getattr(self, part)
        if o is None:
            return None
        return arrays_digest({k: np.asarray(v) for k, v in vars(o).items() if v is not None})


# ----------------------------------------------------------------------------- similarity_model

def similarity_model_stage(inp: GroupingInputs) -> SimilarityModel:
    """The trained similarity model: from the model cache when a model of the same spec (scheme,
    T for the group model, aux data, pool, config, seed: nothing of the release's encryptions)
    was trained before, on this machine or another (e.g. a GPU), else trained and stored there,
    so every release of that scheme reuses it."""
    import torch

    from hidebench.pipeline import from_arrays, to_arrays

    spec = _similarity_model_key(inp)
    cache = inp.ctx.model_cache()
    hit = cache.load("similarity", spec)
    if hit is not None:
        state, manifest = hit
        try:
            arrays = {k: v.numpy() for k, v in state.items()}
            arrays.update({k: np.asarray(v) for k, v in manifest.get("json_fields", {}).items()})
            model = from_arrays(SimilarityModel, arrays)
            _check_similarity_model(model, inp)
            return model
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            cache.log(f"hidebench: cached similarity model does not fit ({' '.join(str(e).split())[:160]}); retraining")
    t0 = time.perf_counter()
    model = train_similarity_model(inp.view, inp.aux(), inp.grouping.similarity, pool=inp.pool(),
                                   group_steps=inp.group_steps, seed=inp.seed("similarity_model"), device=inp.device,
                                   progress=inp.ctx.progress)
    train_s = time.perf_counter() - t0
    arrays = to_arrays(model)
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items() if v.dtype.kind in "fiub"}
    cache.store("similarity", spec, tensors, {"train_s": train_s, "device": str(inp.device),
                                              "json_fields": {k: str(v) for k, v in arrays.items() if k not in tensors}})
    return model


def _similarity_model_key(inp: GroupingInputs) -> dict:
    """What shapes the trained model (the other similarity keys only change how it scores)."""
    s, v = inp.grouping.similarity, inp.view
    key = {"width": s.width, "batch_size": s.batch_size, "lr": s.lr, "blend": s.blend,
           "embedder": s.embedder.to_dict(), "rounds": s.rounds.to_dict()}
    if s.method == "comparative":           # keys of the embedder's models unchanged
        key = {**key, "method": s.method, "comparative": s.comparative.to_dict()}
        del key["embedder"], key["width"]
    if s.pair.rerank:
        key["pair_steps"] = s.pair.steps
    if inp.group_steps:
        key["group"] = [inp.group_steps, v.T]
    scheme = [v.k, v.mode, v.scheme, int(v.labels.shape[1])]
    if (v.c1, v.c2) != (0.65, 0.3) or v.augment:     # keys of plain default-bound releases unchanged
        scheme += [v.c1, v.c2, v.augment]
    return {"similarity": key, "scheme": scheme,
            "seed": inp.seed("similarity_model"), "aux": inp.aux_digest(), "pool": inp.pool_config,
            "pool_seed": inp.seed("pool") if inp.pool_config else None}


def trains_model(inp: GroupingInputs) -> bool:
    return inp.grouping.similarity.trained and inp.pairs is None and inp.assignment is None


def _check_similarity_model(m: SimilarityModel, inp: GroupingInputs) -> None:
    from hidebench.attacks.grouping.nets import arrays_to_state, build_pair_model, build_similarity_net

    s = inp.grouping.similarity
    arrays_to_state(build_similarity_net(s), m.weights, "embed.")
    if s.pair.rerank:
        arrays_to_state(build_pair_model(s.width), m.weights, "pair.")
    if inp.group_steps:
        arrays_to_state(build_pair_model(s.width), m.weights, "group.")
    if not 0 <= float(m.blend) <= 1:
        raise ValueError(f"blend {m.blend!r} outside [0, 1]")
    expect(m.val_grid, "val_grid", (None,))
    expect(m.val_precision, "val_precision", (len(m.val_grid),))


# ----------------------------------------------------------------------------- grouping

def grouping_stage(inp: GroupingInputs, similarity_model: SimilarityModel | None = None) -> Grouping:
    if inp.assignment is not None:
        return oracle_grouping(inp.assignment, inp.view)
    seed = inp.seed("grouping")
    rng = np.random.default_rng(seed)
    if inp.scalable:
        return _scalable_grouping(inp, similarity_model, seed, rng)
    t0 = time.perf_counter()
    if inp.pairs is not None:
        method, S = "oracle_pairs", true_similarity(inp.pairs, rng)
    else:
        method = inp.grouping.similarity.method
        S = release_similarity(inp.view, inp.grouping.similarity, similarity_model, device=inp.device)
    timings = {"similarity_s": time.perf_counter() - t0}
    g = find_groups(inp.view, inp.grouping, inp.n_private, S=S, seed=seed, anchor_rng=rng,
                    rescore=_group_rescorer(inp, similarity_model))
    g.stats = {"similarity": method, **g.stats}
    if inp.grouping.similarity.self_training.rounds and similarity_model is not None and inp.pairs is None:
        t1 = time.perf_counter()
        g = _self_trained(inp, similarity_model, g)
        timings["self_training_s"] = time.perf_counter() - t1
    g.timings = {**timings, **g.timings}
    return g


def _self_trained(inp: GroupingInputs, model: SimilarityModel, g: Grouping) -> Grouping:
    """Rounds of self-training on the release (self_training.py): fine-tune on the grouping's
    confident members, regroup; the rounds' statistics in stats['self_training']."""
    from hidebench.attacks.attacker_data import AttackerEncryptions
    from hidebench.attacks.grouping.self_training import changed_fraction, self_train_round

    s, view, seed = inp.grouping.similarity, inp.view, inp.seed("grouping")
    attacker = AttackerEncryptions(view, inp.aux(), n_images=s.rounds.images, T=s.rounds.T, pool=inp.pool(),
                                   seed=inp.seed("self_training"))
    history = []
    for r in range(s.self_training.rounds):
        model, stats = self_train_round(view.encryptions, g.assignment, g.n_clusters, model, width=s.width,
                                        dim=s.embedder.dim, temperature=s.embedder.temperature,
                                        batch=s.batch_size, cfg=s.self_training, attacker=attacker,
                                        seed=inp.seed(f"self_training/{r}"), device=inp.device,
                                        progress=inp.ctx.progress)
        S = release_similarity(view, s, model, device=inp.device)
        new = find_groups(view, inp.grouping, inp.n_private, S=S, seed=seed, anchor_rng=np.random.default_rng(seed),
                          rescore=_group_rescorer(inp, model))
        changed = changed_fraction(g.assignment, new.assignment, g.n_clusters)
        history.append({**stats, "changed_fraction": round(changed, 4)})
        new.stats = {**g.stats, **new.stats}
        g = new
        if changed < s.self_training.min_change:
            break
    g.stats["self_training"] = history
    return g


def _group_rescorer(inp: GroupingInputs, similarity_model: SimilarityModel | None):
    """The second graph's rescoring (group_model.py) when the similarity model has a group model."""
    g = inp.grouping.similarity.group
    if similarity_model is None or not inp.group_steps:
        return None
    return group_rescorer(inp.view.encryptions, similarity_model.weights, width=inp.grouping.similarity.width,
                          candidates=g.candidates, weight=g.weight, device=inp.device)


def _scalable_grouping(inp: GroupingInputs, similarity_model, seed: int, rng) -> Grouping:
    """The grouping from the similarity embedding (scalable.py); under oracle 'pairs' the
    embedding is the key's membership rows / sqrt(slots), whose dot products are > 0 exactly for
    encryptions sharing an image."""
    view, cfg = inp.view, inp.grouping
    t0 = time.perf_counter()
    if inp.pairs is not None:
        method = "oracle_pairs"
        F = membership_matrix(inp.pairs.ids, inp.pairs.n_private, np.float32) / np.sqrt(view.n_private_slots)
    else:
        method = cfg.similarity.method
        F = expand_queries(release_embedding(view, cfg.similarity, similarity_model, device=inp.device),
                           cfg.similarity.query_expansion, label_support(view.labels))
    timings = {"similarity_s": time.perf_counter() - t0}
    g = find_groups_scalable(view, cfg, inp.n_private, F=F, seed=seed, anchor_rng=rng,
                             rescore=_group_rescorer(inp, similarity_model), progress=inp.ctx.progress)
    g.stats = {"similarity": method, "path": "scalable", **g.stats}
    g.timings = {**timings, **g.timings}
    return g


def _grouping_key(inp: GroupingInputs) -> dict:
    c = inp.grouping
    if inp.assignment is not None:
        return {"view": inp.view_digest, "oracle_assignment": inp.oracle_digest("assignment"), "slots": "heavier_first"}
    similarity = c.similarity.to_dict()
    similarity["group"]["steps"] = inp.group_steps         # "auto" resolved: what trained the rescorer
    if c.similarity.method != "comparative":     # keys of the other methods' groupings unchanged
        del similarity["comparative"]
    key = {"view": inp.view_digest, "similarity": similarity, "clustering": c.clustering.to_dict(),
           "assignment": c.assignment.to_dict(), "eval_anchors": c.eval_anchors, "seed": inp.seed("grouping"),
           "oracle_pairs": inp.oracle_digest("pairs")}
    if inp.scalable:
        key["path"] = "scalable"
        if c.clustering.method == "spectral":    # k-means keys unchanged
            key["cores"] = "spectral_per_class"
    return key


def _check_grouping(g: Grouping, inp: GroupingInputs) -> None:
    E, slots = len(inp.view), inp.view.n_private_slots
    n = g.n_clusters
    if not isinstance(n, int) or not 1 <= n <= E * slots:
        raise ValueError(f"n_clusters {n!r} outside [1, {E * slots}]")
    expect(g.assignment, "assignment", (E, slots), kind="i", low=0, high=n)
    expect(g.cluster_class, "cluster_class", (n,), kind="i", low=-1, high=inp.view.labels.shape[1])
    ps = g.pair_sample
    if ps:
        expect(ps.get("anchors"), "pair_sample.anchors", (None,), kind="i", low=0, high=E)
        expect(ps.get("scores"), "pair_sample.scores", (len(ps["anchors"]), E))
        if "core_flat" in ps:
            expect(ps["core_flat"], "pair_sample.core_flat", (None,), kind="i", low=0, high=E)
            expect(ps.get("core_offsets"), "pair_sample.core_offsets", (None,), kind="i", low=0,
                   high=len(ps["core_flat"]) + 1)


GROUPING_STAGES = [
    Stage("similarity_model", similarity_model_stage, SimilarityModel, _similarity_model_key, when=trains_model,
          check=_check_similarity_model),
    Stage("grouping", grouping_stage, Grouping, _grouping_key, upstream=("similarity_model",), check=_check_grouping),
]


def check_grouping_inputs(inp: GroupingInputs) -> None:
    """Refuse, before any stage runs, inputs the grouping would trip over: oracle parts that do
    not match the release, an unresolved aux, a CNN similarity without aux data."""
    E, slots = len(inp.view), inp.view.n_private_slots
    for part in ("pairs", "assignment"):
        o = getattr(inp, part)
        if o is not None and np.asarray(o.ids).shape != (E, slots):
            raise HidebenchError(f"the '{part}' oracle covers ids of shape {np.asarray(o.ids).shape}, "
                                 f"the release {E} encryptions x {slots} private slots")
    if inp.aux_spec == FROM_RECIPE:
        raise HidebenchError("the threat model's aux is 'recipe': resolve it against the release's manifest "
                             "(ReleaseThreatModel.resolve) before the attack runs")
    if inp.scalable and inp.grouping.similarity.pair.rerank and trains_model(inp):
        raise HidebenchError("similarity.pair.rerank needs the E x E similarity: it runs on releases of at most "
                             f"dense_max = {inp.grouping.dense_max} encryptions, this one has {E}")
    if trains_model(inp) and not inp.aux_spec:
        raise HidebenchError(f"similarity.method {inp.grouping.similarity.method!r} trains on auxiliary images, but the "
                             "threat model grants none: "
                             "give aux data (e.g. --aux lfw[1::2]) or set similarity.method = 'pearson'")
