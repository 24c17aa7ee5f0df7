"""Configuration of the learned single-encryption decoders (deep_decompose, gan_demask).

The InstaHide paper (Huang et al., ICML 2020, Sec. 5) evaluates a "deep decompose" attack and a
GAN-based demasking attack without publishing their networks or training; these are hidebench's
choices, each a plain default (none depends on the hardware): larger networks and longer
training by config.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hidebench.attacks.grouping.config import GroupingConfig
from hidebench.config import Config, check_bool, check_choice, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory

FUSE = ("auto", "carlini", "pairs", "none")
ORDERS = ("heaviest", "free")


@dataclass
class UNetConfig(Config):
    """A U-Net: `width` channels at full resolution, doubled per level, `depth` levels."""

    section = "net"
    width: int = 16
    depth: int = 3

    def validate(self):
        check_int(self.width, f"{self.section}.width", min=4, max=512)
        check_int(self.depth, f"{self.section}.depth", min=1, max=5)


@dataclass
class NetConfig(UNetConfig):
    """The decomposer's U-Net; `residual`: on Mixup (signed) inputs it predicts a correction to
    its input (see nets.UNet); |e| inputs never are residual."""

    residual: bool = True

    def validate(self):
        super().validate()
        check_bool(self.residual, f"{self.section}.residual")


@dataclass
class TrainConfig(Config):
    """Adam for `steps` steps of `batch_size` fresh encryptions of the attacker's aux images
    (at most `aux_max`, with `patches` public patches: its own pool draw when granted, else
    stand-ins), learning rate `lr` on a cosine schedule; one curve point per `epoch_steps`."""

    section = "training"
    steps: int = 900
    batch_size: int = 64
    lr: float = 2e-3
    aux_max: int = 20000
    patches: int = 4096
    epoch_steps: int = 50

    def validate(self):
        s = self.section
        check_int(self.steps, f"{s}.steps", min=1)
        check_int(self.batch_size, f"{s}.batch_size", min=1)
        check_memory(self.batch_size * IMAGE_BYTES * 64, f"{s}.batch_size={self.batch_size}")
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        check_int(self.aux_max, f"{s}.aux_max", min=2)
        check_int(self.patches, f"{s}.patches", min=1)
        check_int(self.epoch_steps, f"{s}.epoch_steps", min=1)


@dataclass
class DeepDecomposeConfig(Config):
    """deep_decompose: a U-Net from one encryption (|e| for InstaHide) and its label row to its
    `n_out` heaviest private images, loss L1 + `ssim_weight` (1 - SSIM). order: 'heaviest'
    trains output j on the j-th heaviest image; 'free' on whichever order fits each example
    best (an example whose heavier image is ambiguous is then not blurred). The decryption of
    an encryption is its first output (its heavier image under 'heaviest').

    fuse: how the recovered private set is made when the release states T. 'auto': the 'pairs'
    oracle's membership when granted, else Carlini's grouping stages; 'carlini'; 'pairs'
    (oracle ablation); 'none': no recovered set. `grouping`: the grouping's config
    (hidebench.attacks.grouping; e.g. {similarity = {embedder = {steps = 300}}}). `inference_batch`:
    encryptions per forward pass."""

    section = "deep_decompose"
    n_out: int = 2
    order: str = "free"
    ssim_weight: float = 1.0
    net: NetConfig = field(default_factory=NetConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    fuse: str = "auto"
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    inference_batch: int = 256

    def validate(self):
        check_int(self.n_out, f"{self.section}.n_out", min=1, max=8)
        check_float(self.ssim_weight, f"{self.section}.ssim_weight", min=0)
        check_choice(self.order, f"{self.section}.order", ORDERS)
        check_choice(self.fuse, f"{self.section}.fuse", FUSE)
        check_int(self.inference_batch, f"{self.section}.inference_batch", min=1)

    def model_dict(self) -> dict:
        """What shapes the trained network (its model-cache key)."""
        return {"n_out": self.n_out, "order": self.order, "ssim_weight": self.ssim_weight, "net": self.net.to_dict(),
                "training": self.training.to_dict()}


@dataclass
class DiscriminatorConfig(Config):
    section = "discriminator"
    width: int = 32

    def validate(self):
        check_int(self.width, f"{self.section}.width", min=4, max=512)


@dataclass
class GanTrainConfig(TrainConfig):
    """The GAN's training: as TrainConfig, at pix2pix's lower learning rate."""

    lr: float = 1e-3


@dataclass
class GanDemaskConfig(Config):
    """gan_demask: a pix2pix generator (U-Net `generator`, PatchGAN `discriminator`, loss
    adversarial + `l1_weight` L1; Adam at `training.lr`, betas (0.5, 0.999)) from |encryption|
    and its label row to the signed mixture; the `decompose` network (a deep_decompose config,
    trained on Mixup with the release's k and mode) then splits the demasked mixture into
    private images, and its `fuse` applies."""

    section = "gan_demask"
    generator: UNetConfig = field(default_factory=UNetConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    training: GanTrainConfig = field(default_factory=GanTrainConfig)
    l1_weight: float = 100.0
    decompose: DeepDecomposeConfig = field(default_factory=DeepDecomposeConfig)

    def validate(self):
        check_float(self.l1_weight, f"{self.section}.l1_weight", min=0)

    def model_dict(self) -> dict:
        return {"generator": self.generator.to_dict(), "discriminator": self.discriminator.to_dict(),
                "training": self.training.to_dict(), "l1_weight": self.l1_weight}
