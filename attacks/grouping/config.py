"""Configuration of the grouping (hidebench.attacks.grouping): one section per step and the
settings they share. Every default is a plain value (none depends on the hardware); larger
models and longer training by config.

    similarity   step 1: a score for every pair of encryptions (Carlini et al. Sec. 5.2), with
                 its networks' sub-sections: embedder, rounds (the attacker's training data),
                 pair (the paper's pairwise model, reranking) and group (the second graph)
    clustering   step 2: one core group of encryptions per private image (Sec. 5.3)
    assignment   step 3: every encryption gets its private-slot groups (Sec. 5.3)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hidebench.config import Config, check_auto, check_bool, check_choice, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory

# The similarity's methods: the two trained networks, then the baseline without training.
SIMILARITY_METHODS = ("cnn", "comparative", "pearson")


@dataclass
class EmbedderConfig(Config):
    """The similarity's embedding CNN: |e| -> a `dim`-d unit vector, trained `steps` Adam steps
    with a multi-positive contrastive loss (SupCon, Khosla et al. 2020) at `temperature`. It
    trains on (1 - w) cos + w Pearson with w = `pearson_weight` (it then learns a residual to
    Pearson)."""

    section = "similarity.embedder"
    dim: int = 64
    steps: int = 600
    temperature: float = 0.1
    pearson_weight: float = 0.0

    def validate(self):
        s = self.section
        self.dim = check_int(self.dim, f"{s}.dim", min=1)
        self.steps = check_int(self.steps, f"{s}.steps", min=1)
        check_float(self.temperature, f"{s}.temperature", min=0, min_open=True)
        check_float(self.pearson_weight, f"{s}.pearson_weight", min=0, max=1, max_open=True)


@dataclass
class ComparativeConfig(Config):
    """The comparative network of Luo et al. (AAAI 2022; nets.build_comparative): a siamese
    trunk of `blocks` residual blocks, `width` channels, pooled to `grid` x `grid` maps per
    channel; the pair score is the channel-weighted cosine of the two maps, a dot product of
    per-encryption embeddings (width * grid^2 values). Trained `steps` Adam steps with the
    multi-positive contrastive loss at `temperature`, as the embedder is."""

    section = "similarity.comparative"
    width: int = 32
    blocks: int = 2
    grid: int = 4
    steps: int = 1000
    temperature: float = 0.1

    def validate(self):
        s = self.section
        self.width = check_int(self.width, f"{s}.width", min=1, max=512)
        self.blocks = check_int(self.blocks, f"{s}.blocks", min=0, max=16)
        self.grid = check_int(self.grid, f"{s}.grid", min=1, max=16)
        self.steps = check_int(self.steps, f"{s}.steps", min=1)
        check_float(self.temperature, f"{s}.temperature", min=0, min_open=True)


@dataclass
class RoundsConfig(Config):
    """The attacker's training data for every similarity network: each round encrypts `images`
    aux images `T` times with the release's scheme, a fresh round every `steps` training steps.
    `pool_draws` > 1: the attacker screens that many times the recipe's public-pool regions and
    each round takes a fresh recipe-sized subset, so a network cannot learn the attacker's own
    few patches by heart; 1 lends one draw to every round."""

    section = "similarity.rounds"
    images: int = 400
    T: int = 10
    steps: int = 50
    pool_draws: int = 1

    def validate(self):
        s = self.section
        for name in ("images", "T", "steps", "pool_draws"):
            setattr(self, name, check_int(getattr(self, name), f"{s}.{name}", min=1))


@dataclass
class PairConfig(Config):
    """The paper's pairwise 6-channel model on [|e_i|, |e_j|], trained `steps` steps; it reranks
    each encryption's `rerank` best candidates of the embedding (0: off), blended with weight
    `weight`."""

    section = "similarity.pair"
    rerank: int = 0
    weight: float = 0.5
    steps: int = 300

    def validate(self):
        s = self.section
        self.rerank = check_int(self.rerank, f"{s}.rerank", min=0)
        check_float(self.weight, f"{s}.weight", min=0, max=1)
        self.steps = check_int(self.steps, f"{s}.steps", min=1)


@dataclass
class GroupModelConfig(Config):
    """The paper's second graph (group_model.py): a 6-channel model, trained `steps` steps,
    scores an encryption against the template of a whole group; after the assignment each
    encryption's `candidates` best groups are rescored against the assignment's templates
    (blend weight `weight`) and the assignment runs again, `passes` times. InstaHide releases
    only. steps "auto": 1000 (on the scalable path too: at n_priv = 1000 its 8 passes cost 14
    minutes on 2 cores and lift the assignment accuracy from 0.364 to 0.498)."""

    section = "similarity.group"
    steps: int | str = "auto"
    candidates: int = 12
    passes: int = 8
    weight: float = 1.0

    def validate(self):
        s = self.section
        check_auto(self.steps, f"{s}.steps", lambda v, n: check_int(v, n, min=0))
        self.candidates = check_int(self.candidates, f"{s}.candidates", min=1)
        self.passes = check_int(self.passes, f"{s}.passes", min=1)
        check_float(self.weight, f"{s}.weight", min=0, max=1)

    @property
    def resolved_steps(self) -> int:
        """The training steps: `steps`, or 1000 for "auto"."""
        return 1000 if self.steps == "auto" else self.steps


@dataclass
class SelfTrainingConfig(Config):
    """Self-training on the release (self_training.py): `rounds` rounds (0: off), each
    fine-tuning the embedding CNN `steps` Adam steps at learning rate `lr` on the `keep` most
    central share of every group's members (pseudo-labelled by the grouping) and on the
    attacker's own encryptions (`attacker_rounds` fresh rounds a round), the release's batches
    weighing `release_weight`; then the grouping runs again. Stops early once fewer than
    `min_change` of the encryptions change groups. Dense path, similarity.method 'cnn' only."""

    section = "similarity.self_training"
    rounds: int = 0
    steps: int = 200
    lr: float = 1e-3
    keep: float = 0.5
    release_weight: float = 0.5
    attacker_rounds: int = 4
    min_change: float = 0.01

    def validate(self):
        s = self.section
        self.rounds = check_int(self.rounds, f"{s}.rounds", min=0)
        self.steps = check_int(self.steps, f"{s}.steps", min=1)
        self.attacker_rounds = check_int(self.attacker_rounds, f"{s}.attacker_rounds", min=1)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_float(self.keep, f"{s}.keep", min=0, max=1, min_open=True)
        check_float(self.release_weight, f"{s}.release_weight", min=0, max=1)
        check_float(self.min_change, f"{s}.min_change", min=0, max=1)


@dataclass
class SimilarityConfig(Config):
    """Step 1: a score for every pair of encryptions.

    method: 'cnn' (an embedding CNN on |encryption|, trained on encryptions the attacker makes
    itself from its aux data with the release's scheme; needs aux data), 'comparative' (Luo et
    al.'s comparative network in embedding form, section `comparative`, trained the same way)
    or 'pearson' (Pearson correlation of |e|, no training). The networks share `width` (channels of their first block),
    `batch_size` and peak learning rate `lr` (one-cycle schedule); their own settings are the
    sub-sections. The score is (1 - w) cos(CNN) + w Pearson with w = `blend`, "auto": chosen from
    {0, .25, .5, .75, 1} by precision@T on a held-out round of the attacker's own encryptions.
    `query_expansion` k > 0: each embedding is averaged with its k nearest before scoring.
    `self_training`: fine-tune the CNN on the release's own grouping, then group again.
    """

    section = "similarity"
    method: str = "cnn"
    width: int = 16
    batch_size: int = 256
    lr: float = 3e-3
    blend: float | str = "auto"
    query_expansion: int = 0
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    comparative: ComparativeConfig = field(default_factory=ComparativeConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    group: GroupModelConfig = field(default_factory=GroupModelConfig)
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", SIMILARITY_METHODS)
        self.width = check_int(self.width, f"{s}.width", min=1)
        self.batch_size = check_int(self.batch_size, f"{s}.batch_size", min=1)
        self.query_expansion = check_int(self.query_expansion, f"{s}.query_expansion", min=0)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_auto(self.blend, f"{s}.blend", lambda v, n: check_float(v, n, min=0, max=1))
        width = self.comparative.width if self.method == "comparative" else self.width
        check_memory(self.batch_size * self.rounds.T * IMAGE_BYTES * 4 * width, f"{s}.batch_size={self.batch_size}")
        check_memory(self.rounds.images * self.rounds.T * IMAGE_BYTES * 2, f"{s}.rounds.images x rounds.T")

    @property
    def trained(self) -> bool:
        """Whether the method trains a network on the attacker's own encryptions."""
        return self.method != "pearson"


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
    (grouping.dense_max) 'spectral' clusters each class's rows apart (`scalable.spectral_cores`),
    and 'kmeans' (that path only) runs k-means on the similarity embedding.
    """

    section = "clustering"
    method: str = "spectral"
    core_frac: float = 0.5
    candidates_frac: float = 2.0
    linkage: str = "mean"
    max_overlap: float = 0.5
    knn_frac: float = 1.0

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("spectral", "greedy", "kmeans"))
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
    (encryptions similar to everything no longer crowd the groups' capacity). `core_rebuilds` passes
    rebuild the group cores from the assignment and assign again. On the scalable path
    (grouping.dense_max) prices on the groups enforce the flow's capacities instead.
    """

    section = "assignment"
    method: str = "flow"
    flow_candidates: int = 8
    capacity_slack: float = 2.0
    class_slots: bool = True
    greedy_frac: float = 1.6
    core_rebuilds: int = 1
    row_norm: bool = False

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("flow", "greedy"))
        self.flow_candidates = check_int(self.flow_candidates, f"{s}.flow_candidates", min=1)
        self.core_rebuilds = check_int(self.core_rebuilds, f"{s}.core_rebuilds", min=0)
        check_float(self.capacity_slack, f"{s}.capacity_slack", min=0, max=100, max_open=True)
        check_float(self.greedy_frac, f"{s}.greedy_frac", min=0, min_open=True)
        check_bool(self.class_slots, f"{s}.class_slots")
        check_bool(self.row_norm, f"{s}.row_norm")


@dataclass
class GroupingConfig(Config):
    """The whole grouping: its three sections and

    aux_max: auxiliary images loaded at most (a strided, class-balanced subset of the aux
    source) for the similarity training.
    eval_anchors: encryptions whose similarity rows are kept for the pair metrics of the
    evaluation (pair AUC, precision@T); the grouping is unaffected.
    dense_max: releases of more encryptions take the scalable path (no E x E matrix): k-means
    cores on the similarity embedding and prices in place of the flow (scalable.py). 0: always.
    """

    section = "grouping"
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    aux_max: int = 4000
    eval_anchors: int = 500
    dense_max: int = 20000

    def validate(self):
        self.aux_max = check_int(self.aux_max, f"{self.section}.aux_max", min=1)
        self.eval_anchors = check_int(self.eval_anchors, f"{self.section}.eval_anchors", min=1)
        self.dense_max = check_int(self.dense_max, f"{self.section}.dense_max", min=0)
