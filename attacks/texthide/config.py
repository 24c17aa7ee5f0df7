"""Typed configs of the TextHide attacks: one section per step, each attack's config holding the
sections of the steps it runs (masks; masks + unmix; masks + unmix + invert)."""
from __future__ import annotations

from dataclasses import dataclass, field

from hidebench.attacks.grouping.config import AssignmentConfig, ClusteringConfig
from hidebench.config import Config, check_bool, check_choice, check_float, check_int


@dataclass
class ReferenceConfig(Config):
    """The attacker's statistics of the representations (reference.py): `simulate` mixtures of
    its own sentences' representations (at most `max_texts` of them), mixed as the release
    states (k, |N(0,1)| coefficients), give the mean of a mixture and each dimension's sign bias."""

    section = "reference"
    max_texts: int = 4000
    simulate: int = 4000

    def validate(self):
        self.max_texts = check_int(self.max_texts, f"{self.section}.max_texts", min=2)
        self.simulate = check_int(self.simulate, f"{self.section}.simulate", min=10, max=10 ** 6)


@dataclass
class MaskConfig(Config):
    """Mask-pool recovery (masks.py): k-means (`n_init` restarts, `max_iter` iterations) of the
    encryptions' sign patterns, each dimension weighted by the square root of its sign bias, into
    min(m, E) groups; one mask per group."""

    section = "masks"
    n_init: int = 2
    max_iter: int = 100

    def validate(self):
        self.n_init = check_int(self.n_init, f"{self.section}.n_init", min=1, max=100)
        self.max_iter = check_int(self.max_iter, f"{self.section}.max_iter", min=1, max=10000)


@dataclass
class TextAssignmentConfig(AssignmentConfig):
    """The grouping's assignment (hidebench.attacks.grouping.config.AssignmentConfig) without the
    core-rebuild pass by default: on TextHide releases it costs a third of the grouping's time and
    did not change the recovered representations (docs/guide.md, "TextHide")."""

    core_rebuilds: int = 0


@dataclass
class UnmixConfig(Config):
    """Unmixing (unmix.py): the grouping's clustering and assignment (hidebench.attacks.grouping)
    on the cosine similarity of the unmasked, centred encryptions, then `ls_iters` alternations of
    least squares for the private representations (ridge `ridge`) and for the coefficients (the
    labels' class sums enforced with weight `label_weight`); `rounds` more passes re-estimate the
    masks from the fitted mixtures and group again; align_signs: then give every dimension the sign
    that agrees with the nearest of the attacker's sentences (needs candidates). dense_max: the
    largest release it groups (its similarity matrix is E x E)."""

    section = "unmix"
    rounds: int = 2
    align_signs: bool = True
    ls_iters: int = 6
    ridge: float = 1e-3
    label_weight: float = 10.0
    dense_max: int = 20000
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    assignment: TextAssignmentConfig = field(default_factory=TextAssignmentConfig)

    def validate(self):
        s = self.section
        self.rounds = check_int(self.rounds, f"{s}.rounds", min=0, max=50)
        self.ls_iters = check_int(self.ls_iters, f"{s}.ls_iters", min=1, max=1000)
        self.dense_max = check_int(self.dense_max, f"{s}.dense_max", min=2)
        check_float(self.ridge, f"{s}.ridge", min=0)
        check_float(self.label_weight, f"{s}.label_weight", min=0)
        check_bool(self.align_signs, f"{s}.align_signs")


@dataclass
class InvertConfig(Config):
    """Inversion to text. method 'nearest' (invert.py): each recovered representation becomes the
    candidate sentence whose representation is closest in cosine; 'bow' (bow.py): the words an MLP
    (`hidden` units, trained `epochs` epochs at `lr` on the attacker's sentences) finds in it,
    among the `vocab` most frequent tokens of those sentences."""

    section = "invert"
    method: str = "nearest"
    vocab: int = 3000
    hidden: int = 1024
    epochs: int = 30
    lr: float = 1e-3

    def validate(self):
        s = self.section
        check_choice(self.method, f"{s}.method", ("nearest", "bow"))
        self.vocab = check_int(self.vocab, f"{s}.vocab", min=10, max=200000)
        self.hidden = check_int(self.hidden, f"{s}.hidden", min=1, max=65536)
        self.epochs = check_int(self.epochs, f"{s}.epochs", min=1, max=10000)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True, max=10)


@dataclass
class MasksAttackConfig(Config):
    section = "texthide_masks"
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)


@dataclass
class UnmixAttackConfig(Config):
    section = "texthide_unmix"
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    unmix: UnmixConfig = field(default_factory=UnmixConfig)


@dataclass
class InvertAttackConfig(Config):
    section = "texthide_invert"
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    unmix: UnmixConfig = field(default_factory=UnmixConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)
