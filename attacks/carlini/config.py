"""Configuration of the Carlini et al. attack (arXiv 2011.05315), one section per stage.

    similarity    stage 1: which encryptions share a private image (Sec. 5.2)   } the grouping's
    clustering    stage 2: one core group of encryptions per private image       } sections
    assignment    stage 3: every encryption gets its private-slot groups         } (grouping.config)
    regression    stage 4: the private images, up to one sign per pixel position (Sec. 5.3)
    sign_sync     stage 4: the relative signs of the private images per pixel position
    reassignment  stage 4: regression-driven reassignment rounds (EM-style)
    signs         stage 5: the one sign per position left open
    prior         stages 4-5: a learned decoder's estimate of the images as a sign prior (optional)
    fusion        with recovery 'fusion': Luo et al.'s fusion-denoising network in place of
                  stages 4-5 (hidebench.attacks.fdn's FusionConfig)

Every default is a plain value: none depends on the hardware, so a config and a seed give the
same attack on every machine of one device type (larger models and longer training by config).
Device, threads and seed come from the ExecutionContext, never from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hidebench.attacks.decoders.config import DeepDecomposeConfig
from hidebench.attacks.fdn.config import FusionConfig
from hidebench.attacks.grouping.config import AssignmentConfig, ClusteringConfig, GroupingConfig, SimilarityConfig
from hidebench.config import Config, check_auto, check_bool, check_choice, check_float, check_int
from hidebench.types import HidebenchError


@dataclass
class RegressionConfig(Config):
    """Stage 4: the private images from |encryption|, given the grouping and the coefficients.

    init: 'spectral' (least-squares magnitudes + per-position sign synchronisation, section
    sign_sync), 'magnitudes' (least-squares magnitudes, all signs +) or 'aligned' (the paper's
    start: -0.01 everywhere plus tiny noise). refine: 'altmin' (alternating minimisation for real
    phase retrieval, Netrapalli et al. 2013: fix the sign of each predicted encryption pixel,
    solve the linear least squares; `steps` iterations), then `adam_steps` of Adam on the
    loss (0: none); or 'adam' (`steps` of Adam on `loss` at learning rate `lr`: the paper's
    method with loss 'paper' and init 'aligned'; 'paper' min((|e|-m)^2, (|e|+m)^2) equals
    (|e|-|m|)^2). steps 0 skips refinement. fit_noise: model the public patches' energy (and
    mean) per pixel position.

    loss 'folded' is the likelihood of |e| when the public patches add Gaussian noise: |e| is
    folded-normal around the prediction, with variance (public weight^2 x the position's public
    energy + noise_floor x its mean) x a scale fitted per encryption (how much energy its own
    public patches carry: the labels give only their total weight). 'amplitude' is its
    equal-weight least squares. tv_weight: a colour total-variation prior on the images, in nats
    of that likelihood per unit of gradient (loss 'folded' only), on the last regression of the
    stage (the reassignment rounds compare high-frequency energy, which the prior smooths).
    """

    section = "carlini.regression"
    init: str = "spectral"
    refine: str = "altmin"
    steps: int = 30
    adam_steps: int = 50
    loss: str = "folded"
    lr: float = 0.02
    fit_noise: bool = True
    noise_floor: float = 0.05
    tv_weight: float = 4.0

    def validate(self):
        s = self.section
        check_choice(self.init, f"{s}.init", ("spectral", "magnitudes", "aligned"))
        check_choice(self.refine, f"{s}.refine", ("altmin", "adam"))
        check_choice(self.loss, f"{s}.loss", ("folded", "amplitude", "intensity", "paper"))
        self.steps = check_int(self.steps, f"{s}.steps", min=0)
        self.adam_steps = check_int(self.adam_steps, f"{s}.adam_steps", min=0)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_bool(self.fit_noise, f"{s}.fit_noise")
        check_float(self.noise_floor, f"{s}.noise_floor", min=0, min_open=True)
        check_float(self.tv_weight, f"{s}.tv_weight", min=0)
        if self.tv_weight and self.loss != "folded":
            raise HidebenchError(f"{s}.tv_weight weighs the image prior in nats of loss 'folded'; with loss "
                                 f"{self.loss!r} set {s}.tv_weight = 0")


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
    rows whose best pair wins by a wide margin weigh more in the next regression (off: under
    the folded likelihood, whose per-encryption noise scales already weigh the rows, they cost
    0.006 on an unseen Tiny-ImageNet release, docs/history.md 2026-12-06).
    rounds "auto" (the default): 5 on the dense path, 1 on the scalable path (carlini.dense_max:
    a round's time grows linearly with E), and none on releases of fewer than `min_T`
    encryptions per private image, where an image's few encryptions regress into too poor an
    image to re-choose memberships by (docs/results.md, the reassignment measurements).
    split_below / split_above: after every round but the last, each group holding fewer than
    split_below times the mean group size takes half of a group holding more than split_above
    times it (reassignment.split_overfull; split_below 0: never). shown_by_fit: where both of
    an encryption's groups won the last round by a clear fit margin, its decryption shows the
    one whose image fits its encryptions best (stages.shown_by_fit).
    """

    section = "carlini.reassignment"
    rounds: int | str = "auto"
    candidates: int = 12
    margin_weights: bool = False
    min_T: int = 30
    split_below: float = 0.3
    split_above: float = 1.3
    shown_by_fit: bool = True

    def validate(self):
        check_auto(self.rounds, f"{self.section}.rounds", lambda v, n: check_int(v, n, min=0))
        self.candidates = check_int(self.candidates, f"{self.section}.candidates", min=2)
        self.min_T = check_int(self.min_T, f"{self.section}.min_T", min=1)
        check_bool(self.margin_weights, f"{self.section}.margin_weights")
        self.split_below = check_float(self.split_below, f"{self.section}.split_below", min=0.0, max=1.0)
        self.split_above = check_float(self.split_above, f"{self.section}.split_above", min=1.0)
        check_bool(self.shown_by_fit, f"{self.section}.shown_by_fit")

    def rounds_for(self, scalable: bool, T: int) -> int:
        """The rounds to run: `rounds`, or for "auto" five (one on the scalable path; none below min_T)."""
        if self.rounds != "auto":
            return self.rounds
        return 0 if T < self.min_T else 1 if scalable else 5


@dataclass
class SignConfig(Config):
    """Stage 5: the one sign per pixel position shared by all images. method: 'ising'
    (smoothness over neighbouring positions and channels, plus an aux field), 'aux' (per-position
    aux mean only) or 'none' (left as regressed). aux_weight scales the aux field against
    smoothness (0: the aux data only settles the flip of the whole set); neighbours: spatial
    neighbourhood (4 or 8) of the Ising model; sweeps: greedy single-flip sweeps after its
    spectral solution. colour_flip: with neither aux data nor a decoder prior to settle the flip
    of the whole set, choose it so that the set is on average redder than blue, as natural
    photographs are (CIFAR-10, ImageNet, LFW; Carlini et al. fix signs by colour-space
    heuristics); false leaves it as found (a coin flip)."""

    section = "carlini.signs"
    method: str = "ising"
    aux_weight: float = 0.0
    neighbours: int = 8
    sweeps: int = 20
    colour_flip: bool = True

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("ising", "aux", "none"))
        check_float(self.aux_weight, f"{s}.aux_weight", min=0)
        check_choice(self.neighbours, f"{s}.neighbours", (4, 8))
        self.sweeps = check_int(self.sweeps, f"{s}.sweeps", min=0)
        check_bool(self.colour_flip, f"{s}.colour_flip")


@dataclass
class PriorConfig(Config):
    """An estimate of every private image, signs included, as a prior on the signs the
    regression cannot see. decoder: 'none'; 'aux_mean' (each group's image is the mean aux
    image of its class, the `aux_mean` baseline's guess: no training; the overall aux mean where the
    aux classes are not the release's, stages.aux_classes_match); 'deep_decompose' (a
    learned decoder, attacks/decoders, trained on the attacker's aux data, from the model cache;
    its config: `decoder_config`; its per-encryption predictions are fused per group of the
    grouping stage); 'auto' (the default): 'aux_mean' when the threat model grants aux data whose
    classes are the release's, 'none' otherwise.
    The prior enters the per-position sign synchronisation as a field: the aux-mean prior counts
    as much as `aux_votes` encryptions' votes (so its pull fades as T grows and the votes
    become reliable); the decoder's as `weight` times each image's total vote. `global_weight`:
    the prior's field in the global sign choice, relative to one edge of the smoothness model."""

    section = "carlini.prior"
    decoder: str = "auto"
    aux_votes: float = 30.0
    weight: float = 1.0
    global_weight: float = 4.0
    decoder_config: DeepDecomposeConfig = field(default_factory=DeepDecomposeConfig)

    def validate(self):
        s = self.section
        check_choice(self.decoder, f"{s}.decoder", ("auto", "none", "aux_mean", "deep_decompose"))
        check_float(self.aux_votes, f"{s}.aux_votes", min=0)
        check_float(self.weight, f"{s}.weight", min=0)
        check_float(self.global_weight, f"{s}.global_weight", min=0)
        if self.decoder != "deep_decompose" and self.decoder_config != DeepDecomposeConfig():
            raise HidebenchError(f"{s}.decoder_config configures the deep_decompose prior, but {s}.decoder is "
                                 f"{self.decoder!r}")

    def resolved(self, has_aux: bool, aux_is_proxy: bool = False) -> str:
        """The prior actually used: 'auto' resolved against whether aux data is granted, and
        whether its classes are the release's (a proxy's class means mislead the signs: on a
        release of unseen images labelled c0..c9 with CIFAR-10 aux data, Max_SSIM 0.677 with
        them, 0.873 with the overall aux mean, 0.885 without a prior; history.md, 2026-12-05)."""
        if self.decoder == "auto":
            return "aux_mean" if has_aux and not aux_is_proxy else "none"
        return self.decoder


SECTIONS = {"similarity": SimilarityConfig, "clustering": ClusteringConfig, "assignment": AssignmentConfig,
            "regression": RegressionConfig, "sign_sync": SignSyncConfig, "reassignment": ReassignmentConfig,
            "signs": SignConfig, "prior": PriorConfig, "fusion": FusionConfig}

# How the private images are recovered from the grouping.
RECOVERIES = ("regression", "fusion")


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
    (grouping/scalable.py: per-class spectral cores, prices in place of the flow) and the regression
    from sparse designs with Lanczos sign synchronisation. 0: always.
    recovery: 'regression' (the paper's stages 4-5: per-pixel regression, then signs) or
    'fusion' (the fusion-denoising network of Luo et al., AAAI 2022, on each group of the
    grouping, section `fusion`; hidebench.attacks.fdn): the two attacks then share the grouping
    and the fusion code.
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
    recovery: str = "regression"
    fusion: FusionConfig = field(default_factory=FusionConfig)
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
        check_choice(self.recovery, "carlini.recovery", RECOVERIES)
        if self.recovery != "fusion" and self.fusion != FusionConfig():
            raise HidebenchError(f"carlini.fusion configures the fusion network of recovery = 'fusion', but "
                                 f"carlini.recovery is {self.recovery!r}")
        self.eval_anchors = check_int(self.eval_anchors, "carlini.eval_anchors", min=1)
        self.dense_max = check_int(self.dense_max, "carlini.dense_max", min=0)

    def section_dict(self, *names: str) -> dict:
        """The named sections as plain dicts (for stage cache keys)."""
        return {n: dataclasses.asdict(getattr(self, n)) for n in names}

    def grouping(self) -> GroupingConfig:
        """The grouping's config: this config's similarity, clustering and assignment sections
        with its aux_max, eval_anchors and dense_max."""
        return GroupingConfig(similarity=self.similarity, clustering=self.clustering, assignment=self.assignment,
                              aux_max=self.aux_max, eval_anchors=self.eval_anchors, dense_max=self.dense_max)
