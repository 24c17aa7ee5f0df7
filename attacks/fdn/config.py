"""Configuration of the fusion-denoising attack (Luo, Xiao, Wu, Liu, Ooi, AAAI 2022): the
grouping (its comparative network) and the fusion-denoising network.

    grouping   which private images each encryption mixes (hidebench.attacks.grouping), with
               the comparative network as its similarity and a fresh subset of a larger public
               pool draw in every training round
    fusion     the fusion-denoising network: its size (net), its training (training) and the
               attacker's simulated groups it trains on (groups)

`FusionConfig` is also carlini's `fusion` section (`carlini --set recovery=fusion`). Every
default is a plain value (none depends on the hardware); larger networks and longer training by
config.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hidebench.attacks.grouping.config import GroupingConfig, RoundsConfig, SimilarityConfig
from hidebench.config import Config, check_auto, check_bool, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory
from hidebench.types import HidebenchError

# Members a simulated group holds at most (size_max x T beyond it is refused).
MAX_GROUP = 1024


@dataclass
class FusionNetConfig(Config):
    """The fusion-denoising network (nets.FusionNet): each member's |e| / l (l its coefficient),
    l and its label row's other private weight through a shared encoder of two 3 x 3
    convolutions with `features` channels, the mean and the maximum over the members, then a
    U-Net of `width` channels and `depth` levels conditioned on the group's class, to the
    private image. `register`: each member shifted back by its image's shift as a head of
    `register_width` channels predicts it from the crop's pad strips; "auto": on augmented
    releases (the only ones whose members are shifted)."""

    section = "fusion.net"
    features: int = 16
    width: int = 24
    depth: int = 3
    register: bool | str = "auto"
    register_width: int = 16

    def validate(self):
        s = self.section
        self.features = check_int(self.features, f"{s}.features", min=1, max=256)
        self.width = check_int(self.width, f"{s}.width", min=4, max=256)
        self.depth = check_int(self.depth, f"{s}.depth", min=1, max=4)
        check_auto(self.register, f"{s}.register", check_bool)
        self.register_width = check_int(self.register_width, f"{s}.register_width", min=1, max=256)

    def registers(self, augmented: bool) -> bool:
        """Whether the network registers its members: `register`, "auto" resolved."""
        return bool(augmented) if self.register == "auto" else self.register


@dataclass
class SimulatedGroupsConfig(Config):
    """The attacker's simulated groups, the fusion network's training data. Each round encrypts
    `round_images` aux images T times (the release's T) with the release's scheme, augmentation
    included (hidebench.attacks.attacker_data.AttackerEncryptions), a fresh round every
    `round_steps` steps. A group of one image: between size_min x T and size_max x T members
    (an image sits in about n_private_slots x T encryptions of a release, and the grouping's
    groups hold about as many), of which a share drawn from [0, wrong_max] hold other images
    of the same class, as the release's impure groups do."""

    section = "fusion.groups"
    round_images: int = 100
    round_steps: int = 20
    size_min: float = 0.5
    size_max: float = 2.5
    wrong_max: float = 0.7

    def validate(self):
        s = self.section
        self.round_images = check_int(self.round_images, f"{s}.round_images", min=2, max=100_000)
        self.round_steps = check_int(self.round_steps, f"{s}.round_steps", min=1)
        check_float(self.size_min, f"{s}.size_min", min=0, min_open=True)
        check_float(self.size_max, f"{s}.size_max", min=self.size_min)
        check_float(self.wrong_max, f"{s}.wrong_max", min=0, max=1, max_open=True)

    def sizes(self, T: int) -> tuple[int, int]:
        """The smallest and largest simulated group at T encryptions per image."""
        lo = max(1, int(round(self.size_min * T)))
        return lo, max(lo, int(round(self.size_max * T)))


@dataclass
class FusionTrainConfig(Config):
    """Adam for `steps` steps of `batch_size` simulated groups, learning rate `lr` on a cosine
    schedule, loss L1 + `ssim_weight` (1 - SSIM) against the un-augmented aux image (what the
    metric scores against), plus `shift_weight` times the registration's cross-entropy against
    the members' known shifts; at most `aux_max` aux images; one curve point per `epoch_steps`."""

    section = "fusion.training"
    steps: int = 1200
    batch_size: int = 8
    lr: float = 2e-3
    ssim_weight: float = 1.0
    shift_weight: float = 0.2
    aux_max: int = 20000
    epoch_steps: int = 50

    def validate(self):
        s = self.section
        self.steps = check_int(self.steps, f"{s}.steps", min=1)
        self.batch_size = check_int(self.batch_size, f"{s}.batch_size", min=1, max=4096)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_float(self.ssim_weight, f"{s}.ssim_weight", min=0)
        check_float(self.shift_weight, f"{s}.shift_weight", min=0)
        self.aux_max = check_int(self.aux_max, f"{s}.aux_max", min=3)
        self.epoch_steps = check_int(self.epoch_steps, f"{s}.epoch_steps", min=1)


@dataclass
class FusionConfig(Config):
    """The fusion-denoising network: `net`, `training`, `groups` (above); `inference_batch`:
    groups per forward pass when the release's groups are fused."""

    section = "fusion"
    net: FusionNetConfig = field(default_factory=FusionNetConfig)
    training: FusionTrainConfig = field(default_factory=FusionTrainConfig)
    groups: SimulatedGroupsConfig = field(default_factory=SimulatedGroupsConfig)
    inference_batch: int = 4

    def validate(self):
        self.inference_batch = check_int(self.inference_batch, f"{self.section}.inference_batch", min=1, max=4096)

    def check_release(self, T: int) -> None:
        """Refuse simulated groups a release's T makes too large to train on."""
        _, hi = self.groups.sizes(T)
        if hi > MAX_GROUP:
            raise HidebenchError(f"fusion.groups.size_max x T = {self.groups.size_max:g} x {T} = {hi} members a "
                                 f"group; at most {MAX_GROUP}")
        check_memory(hi * self.training.batch_size * IMAGE_BYTES * 8 * self.net.features,
                     f"fusion.training.batch_size={self.training.batch_size} groups of up to {hi} members")

    def model_dict(self) -> dict:
        """What shapes the trained network (its model-cache key)."""
        return {"net": self.net.to_dict(), "training": self.training.to_dict(), "groups": self.groups.to_dict()}


# ----------------------------------------------------------------------------- fdn's grouping defaults

@dataclass
class FdnRoundsConfig(RoundsConfig):
    """fdn's training rounds: each takes a fresh subset of a public pool draw 8 times the
    recipe's (so the comparative network cannot learn the attacker's own few patches)."""

    pool_draws: int = 8


@dataclass
class FdnSimilarityConfig(SimilarityConfig):
    """fdn's similarity: the comparative network."""

    method: str = "comparative"
    rounds: RoundsConfig = field(default_factory=FdnRoundsConfig)


@dataclass
class FdnGroupingConfig(GroupingConfig):
    """fdn's grouping: the shared grouping with the comparative network as its similarity."""

    similarity: SimilarityConfig = field(default_factory=FdnSimilarityConfig)


@dataclass
class FdnConfig(Config):
    """fdn: `grouping` (hidebench.attacks.grouping's sections; the similarity is the comparative
    network, e.g. {similarity = {comparative = {steps = 2000}}}) and `fusion` (the
    fusion-denoising network)."""

    section = "fdn"
    grouping: GroupingConfig = field(default_factory=FdnGroupingConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
