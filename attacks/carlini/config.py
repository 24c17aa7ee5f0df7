"""Configuration of the Carlini et al. attack (arXiv 2011.05315), one section per stage.

    similarity    stage 1: which encryptions share a private image (Sec. 5.2)
    clustering    stage 2: one core group of encryptions per private image (Sec. 5.3)
    assignment    stage 3: every encryption gets its private-slot groups (Sec. 5.3)
    regression    stage 4: the private images, up to one sign per pixel position (Sec. 5.3)
    sign_sync     stage 4: the relative signs of the private images per pixel position
    reassignment  stage 4: regression-driven reassignment rounds (EM-style)
    signs         stage 5: the one sign per position left open
    prior         stages 4-5: a learned decoder's estimate of the images as a sign prior (optional)

Every default is a plain value: none depends on the hardware, so a config and a seed give the
same attack on every machine of one device type (larger models and longer training by config).
Device, threads and seed come from the ExecutionContext, never from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hidebench.config import Config, check_bool, check_choice, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory
from hidebench.types import HidebenchError


@dataclass
class SimilarityConfig(Config):
    """Stage 1: a score for every pair of encryptions.

    method: 'cnn' (an embedding CNN on |encryption|, trained on encryptions the attacker makes
    itself from its aux data with the release's scheme; needs aux data) or 'pearson' (Pearson
    correlation of |e|, no training).
    CNN: `width` channels in its first block, `embed_dim` output size; `train_steps` Adam steps
    of `batch_size` encryptions at peak learning rate `lr` (one-cycle schedule), multi-positive
    contrastive loss (SupCon, Khosla et al. 2020) at `temperature`. Each training round encrypts
    `train_images` aux images `train_T` times; a fresh round every `steps_per_round` steps.
    The similarity is (1 - w) cos(CNN) + w Pearson: the CNN trains with w = `pearson_weight`
    (it then learns a residual to Pearson); `blend` fixes w for scoring, -1 picks it from
    {0, .25, .5, .75, 1} by precision@T on a held-out round of the attacker's own encryptions.
    `query_expansion` k > 0: each embedding is averaged with its k nearest before scoring.
    `rerank` > 0: each encryption's `rerank` best candidates are rescored by the paper's
    pairwise 6-channel model (trained `pair_steps` steps), blended with weight `rerank_weight`.
    `pool_draws` > 1: the attacker screens that many times the recipe's public-pool regions and
    each training round takes a fresh recipe-sized subset (AttackerEncryptions), so the model
    cannot learn its own few patches by heart, which matters more the longer it trains; 1 (the
    default) lends one draw to every round.
    `group_steps` > 0: the paper's second graph (group_model.py): a 6-channel model, trained
    that many steps, scores an encryption against the template of a whole group; after the
    assignment, each encryption's `group_candidates` best groups are rescored against the
    assignment's templates (blend weight `group_weight`) and the assignment runs again,
    `group_passes` times. InstaHide releases only; -1 (the default) means 1000 steps on the
    dense path and none on the scalable path (carlini.dense_max), where its time is unmeasured.
    """

    section = "carlini.similarity"
    method: str = "cnn"
    width: int = 16
    embed_dim: int = 64
    train_steps: int = 600
    batch_size: int = 256
    lr: float = 3e-3
    temperature: float = 0.1
    train_images: int = 400
    train_T: int = 10
    steps_per_round: int = 50
    pearson_weight: float = 0.0
    blend: float = -1.0
    query_expansion: int = 0
    rerank: int = 0
    rerank_weight: float = 0.5
    pair_steps: int = 300
    pool_draws: int = 1
    group_steps: int = -1
    group_candidates: int = 12
    group_weight: float = 1.0
    group_passes: int = 8

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("cnn", "pearson"))
        for name in ("width", "embed_dim", "train_steps", "batch_size", "train_images", "train_T",
                     "steps_per_round", "pair_steps", "pool_draws", "group_candidates", "group_passes"):
            setattr(self, name, check_int(getattr(self, name), f"{s}.{name}", min=1))
        for name in ("query_expansion", "rerank"):
            setattr(self, name, check_int(getattr(self, name), f"{s}.{name}", min=0))
        self.group_steps = check_int(self.group_steps, f"{s}.group_steps (-1: 1000, none on the scalable path)",
                                     min=-1)
        check_memory(self.batch_size * self.train_T * IMAGE_BYTES * 4 * self.width, f"{s}.batch_size={self.batch_size}")
        check_memory(self.train_images * self.train_T * IMAGE_BYTES * 2, f"{s}.train_images x train_T")
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_float(self.temperature, f"{s}.temperature", min=0, min_open=True)
        check_float(self.pearson_weight, f"{s}.pearson_weight", min=0, max=1, max_open=True)
        if self.blend != -1:
            check_float(self.blend, f"{s}.blend (-1: chosen on held-out attacker data)", min=0, max=1)
        check_float(self.rerank_weight, f"{s}.rerank_weight", min=0, max=1)
        check_float(self.group_weight, f"{s}.group_weight", min=0, max=1)

    def group_steps_for(self, scalable: bool) -> int:
        """The group model's training steps: `group_steps`, or for -1 1000 (none when scalable)."""
        return self.group_steps if self.group_steps >= 0 else (0 if scalable else 1000)


@dataclass
class ClusteringConfig(Config):
    """Stage 2: one core group per private image. Sizes are fractions of T (encryptions per
    private image), so they scale with the release.

    method: 'spectral' (spectral clustering of the k-nearest-neighbour graph, `knn_frac`*T
    neighbours) or 'greedy' (the paper's clique growth: cliques of `core_frac`*T members grown
    over each seed's `candidates_frac`*T nearest with `linkage` 'min' or 'mean'; a clique is a
    duplicate of an earlier one when its cross-similarity lies more than `max_overlap` of the way
    from the background to the cliques' cohesion). Either way the groups number exactly E / T.
    Spectral finds more distinct private images with a learned (noisy) similarity; greedy is the
    better choice with a near-perfect one (oracle 'pairs'). On the scalable path
    (carlini.dense_max) the cores come from k-means on the similarity embedding instead.
    """

    section = "carlini.clustering"
    method: str = "spectral"
    core_frac: float = 0.5
    candidates_frac: float = 2.0
    linkage: str = "mean"
    max_overlap: float = 0.5
    knn_frac: float = 1.0

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("spectral", "greedy"))
        check_choice(self.linkage, f"{s}.linkage", ("min", "mean"))
        for name in ("core_frac", "candidates_frac", "knn_frac"):
            check_float(getattr(self, name), f"{s}.{name}", min=0, min_open=True)
        check_float(self.max_overlap, f"{s}.max_overlap", min=0, max=1, max_open=True)


@dataclass
class AssignmentConfig(Config):
    """Stage 3: every encryption gets n_private_slots groups.

    method: 'flow' (min-cost flow over each encryption's `flow_candidates` best label-consistent
    groups; a group takes n_private_slots*T + `capacity_slack` standard deviations of
    encryptions before overflow costs; `class_slots`: a label naming n_private_slots classes
    gets one group of each) or 'greedy' (the paper's: each group takes its `greedy_frac`*T best
    encryptions, 1.6 * 50 = 80 in the paper). `row_norm`: z-score each encryption's group scores
    (encryptions similar to everything no longer crowd the groups' capacity). `refine` passes
    rebuild the group cores from the assignment and assign again. On the scalable path
    (carlini.dense_max) prices on the groups enforce the flow's capacities instead.
    """

    section = "carlini.assignment"
    method: str = "flow"
    flow_candidates: int = 8
    capacity_slack: float = 2.0
    class_slots: bool = True
    greedy_frac: float = 1.6
    refine: int = 1
    row_norm: bool = False

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("flow", "greedy"))
        self.flow_candidates = check_int(self.flow_candidates, f"{s}.flow_candidates", min=1)
        self.refine = check_int(self.refine, f"{s}.refine", min=0)
        check_float(self.capacity_slack, f"{s}.capacity_slack", min=0, max=100, max_open=True)
        check_float(self.greedy_frac, f"{s}.greedy_frac", min=0, min_open=True)
        check_bool(self.class_slots, f"{s}.class_slots")
        check_bool(self.row_norm, f"{s}.row_norm")


@dataclass
class RegressionConfig(Config):
    """Stage 4: the private images from |encryption|, given the grouping and the coefficients.

    init: 'spectral' (least-squares magnitudes + per-position sign synchronisation, section
    sign_sync), 'magnitudes' (least-squares magnitudes, all signs +) or 'aligned' (the paper's
    start: -0.01 everywhere plus tiny noise). refine: 'altmin' (alternating minimisation for real
    phase retrieval, Netrapalli et al. 2013: fix the sign of each predicted encryption pixel,
    solve the linear least squares; `steps` iterations), then `adam_steps` of Adam on the
    amplitude loss (0: none); or 'adam' (`steps` of Adam on `loss` at learning rate `lr`: the
    paper's method with loss 'paper' and init 'aligned'; 'paper' min((|e|-m)^2, (|e|+m)^2) equals
    (|e|-|m|)^2). steps 0 skips refinement. fit_noise: model the public patches' energy (and
    mean) per pixel position.
    """

    section = "carlini.regression"
    init: str = "spectral"
    refine: str = "altmin"
    steps: int = 30
    adam_steps: int = 50
    loss: str = "amplitude"
    lr: float = 0.01
    fit_noise: bool = True

    def validate(self):
        s = self.section
        check_choice(self.init, f"{s}.init", ("spectral", "magnitudes", "aligned"))
        check_choice(self.refine, f"{s}.refine", ("altmin", "adam"))
        check_choice(self.loss, f"{s}.loss", ("amplitude", "intensity", "paper"))
        self.steps = check_int(self.steps, f"{s}.steps", min=0)
        self.adam_steps = check_int(self.adam_steps, f"{s}.adam_steps", min=0)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_bool(self.fit_noise, f"{s}.fit_noise")


@dataclass
class SignSyncConfig(Config):
    """Stage 4, init 'spectral': the relative sign of the private images at each pixel position,
    by Z2 synchronisation (the top eigenvector of the encryptions' votes, then `sweeps` greedy
    max-cut sweeps); `pixel_chunk` positions per batched eigen-decomposition (bounds memory).
    On the scalable path (carlini.dense_max) the eigenvector comes from `lanczos_steps` Lanczos
    steps on the vote graph instead."""

    section = "carlini.sign_sync"
    sweeps: int = 10
    pixel_chunk: int = 512
    lanczos_steps: int = 30

    def validate(self):
        self.sweeps = check_int(self.sweeps, f"{self.section}.sweeps", min=0)
        self.lanczos_steps = check_int(self.lanczos_steps, f"{self.section}.lanczos_steps", min=1)
        self.pixel_chunk = check_int(self.pixel_chunk, f"{self.section}.pixel_chunk", min=1)


@dataclass
class ReassignmentConfig(Config):
    """Stage 4 without the assignment oracle (cross-dataset InstaHide): `rounds` of regression-
    driven reassignment, EM-style. Each round moves every encryption to the label-consistent
    pair of groups whose predicted intensity best matches it, among the `candidates` groups per
    labelled class whose image correlates best with it, then regresses again; `margin_weights`:
    rows whose best pair wins by a wide margin weigh more in the next regression.
    rounds -1 (the default) means 5 on the dense path and 1 on the scalable path
    (carlini.dense_max): a round's time grows linearly with E, and on the largest releases one
    round is what fits the time budget issue 12 sets (README, Measured results); and none on
    releases of fewer than `min_T` encryptions per private image, where an image's few
    encryptions regress into too poor an image to re-choose memberships by: the rounds drift
    from the second graph's grouping at T=10 and T=20 and improve it at T=50 (README).
    """

    section = "carlini.reassignment"
    rounds: int = -1
    candidates: int = 12
    margin_weights: bool = True
    min_T: int = 30

    def validate(self):
        self.rounds = check_int(self.rounds, f"{self.section}.rounds (-1: 5, or 1 on the scalable path)", min=-1)
        self.candidates = check_int(self.candidates, f"{self.section}.candidates", min=2)
        self.min_T = check_int(self.min_T, f"{self.section}.min_T", min=1)
        check_bool(self.margin_weights, f"{self.section}.margin_weights")

    def rounds_for(self, scalable: bool, T: int) -> int:
        """The rounds to run: `rounds`, or for -1 five (one on the scalable path; none below min_T)."""
        if self.rounds >= 0:
            return self.rounds
        return 0 if T < self.min_T else 1 if scalable else 5


@dataclass
class SignConfig(Config):
    """Stage 5: the one sign per pixel position shared by all images. method: 'ising'
    (smoothness over neighbouring positions and channels, plus an aux field), 'aux' (per-position
    aux mean only) or 'none' (left as regressed). aux_weight scales the aux field against
    smoothness (0: the aux data only settles the flip of the whole set); neighbours: spatial
    neighbourhood (4 or 8) of the Ising model; sweeps: greedy single-flip sweeps after its
    spectral solution."""

    section = "carlini.signs"
    method: str = "ising"
    aux_weight: float = 0.0
    neighbours: int = 8
    sweeps: int = 20

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("ising", "aux", "none"))
        check_float(self.aux_weight, f"{s}.aux_weight", min=0)
        check_choice(self.neighbours, f"{s}.neighbours", (4, 8))
        self.sweeps = check_int(self.sweeps, f"{s}.sweeps", min=0)


@dataclass
class PriorConfig(Config):
    """An estimate of every private image, signs included, as a prior on the signs the
    regression cannot see. decoder: 'none'; 'aux_mean' (each group's image is the mean aux
    image of its class, the `aux_mean` baseline's guess: no training); 'deep_decompose' (a
    learned decoder, attacks/decoders, trained on the attacker's aux data, from the model cache;
    its config: `decoder_config`; its per-encryption predictions are fused per group of the
    grouping stage); 'auto' (the default): 'aux_mean' when the threat model grants aux data,
    'none' otherwise.
    The prior enters the per-position sign synchronisation as a field: the aux-mean prior counts
    as much as `aux_votes` encryptions' votes (so its pull fades as T grows and the votes
    become reliable); the decoder's as `weight` times each image's total vote. `global_weight`:
    the prior's field in the global sign choice, relative to one edge of the smoothness model."""

    section = "carlini.prior"
    decoder: str = "auto"
    aux_votes: float = 30.0
    weight: float = 1.0
    global_weight: float = 4.0
    decoder_config: dict = field(default_factory=dict)

    def validate(self):
        s = self.section
        check_choice(self.decoder, f"{s}.decoder", ("auto", "none", "aux_mean", "deep_decompose"))
        check_float(self.aux_votes, f"{s}.aux_votes", min=0)
        check_float(self.weight, f"{s}.weight", min=0)
        check_float(self.global_weight, f"{s}.global_weight", min=0)
        if not isinstance(self.decoder_config, dict):
            raise HidebenchError(f"{s}.decoder_config must be a table of deep_decompose keys, got {self.decoder_config!r}")
        if self.decoder_config and self.decoder != "deep_decompose":
            raise HidebenchError(f"{s}.decoder_config configures the deep_decompose prior, but {s}.decoder is "
                                 f"{self.decoder!r}")
        self.decoder_settings()

    def decoder_settings(self):
        """The decoder's config (a DeepDecomposeConfig), validated."""
        from hidebench.attacks.decoders.config import DeepDecomposeConfig

        return DeepDecomposeConfig.from_dict(self.decoder_config, where=f"{self.section}.decoder_config")

    def resolved(self, has_aux: bool) -> str:
        """The prior actually used: 'auto' resolved against whether aux data is granted."""
        if self.decoder == "auto":
            return "aux_mean" if has_aux else "none"
        return self.decoder


SECTIONS = {"similarity": SimilarityConfig, "clustering": ClusteringConfig, "assignment": AssignmentConfig,
            "regression": RegressionConfig, "sign_sync": SignSyncConfig, "reassignment": ReassignmentConfig,
            "signs": SignConfig, "prior": PriorConfig}


@dataclass
class CarliniConfig(Config):
    """The whole attack: one section per stage (module docstring) and

    aux_max: auxiliary images loaded at most (a strided, class-balanced subset of the aux
    source), for the similarity training, the colour decision and the sign prior.
    colour: 'grey' solves the three channels as extra observations of one channel, 'rgb' each
    channel on its own, 'auto' grey when the aux images are grey.
    eval_anchors: encryptions whose similarity rows are kept for the pair metrics of `evaluate`
    (pair AUC, precision@T); attack output is unaffected.
    dense_max: releases of more encryptions take the scalable path (no E x E matrix, no
    n x n matrix per pixel position): the grouping works from the similarity embedding
    (scalable_grouping.py: k-means cores, prices in place of the flow) and the regression
    from sparse designs with Lanczos sign synchronisation. 0: always.
    """

    section = "carlini"
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    sign_sync: SignSyncConfig = field(default_factory=SignSyncConfig)
    reassignment: ReassignmentConfig = field(default_factory=ReassignmentConfig)
    signs: SignConfig = field(default_factory=SignConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    aux_max: int = 4000
    colour: str = "auto"
    eval_anchors: int = 500
    dense_max: int = 20000

    def validate(self):
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if value is None or isinstance(value, dict):
                setattr(self, name, cls.from_dict(value, where=f"carlini.{name}"))
            elif not isinstance(value, cls):
                raise HidebenchError(f"carlini.{name} must be a table of {name} keys, got {value!r}")
        self.aux_max = check_int(self.aux_max, "carlini.aux_max", min=1)
        check_choice(self.colour, "carlini.colour", ("auto", "grey", "rgb"))
        self.eval_anchors = check_int(self.eval_anchors, "carlini.eval_anchors", min=1)
        self.dense_max = check_int(self.dense_max, "carlini.dense_max", min=0)

    def section_dict(self, *names: str) -> dict:
        """The named sections as plain dicts (for stage cache keys)."""
        return {n: dataclasses.asdict(getattr(self, n)) for n in names}
