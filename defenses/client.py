"""What a simulated federated client does, as a torch-free config.

A client holds private images from a data source, applies a defense (none, Mixup, or InstaHide
inside- or cross-dataset with any k; Huang et al. 2020), and shares either one gradient of the
shared model on its (encrypted) batch (FedSGD) or a FedAvg update of several local SGD steps
(McMahan et al. 2017). `hidebench.defenses.federated.simulate_client` runs it.

This module imports no torch, so a command line can build its options from these fields (and
check them) without paying torch's start-up. Seed and device are not experiment fields: they
come from the ExecutionContext of the run.
"""
from __future__ import annotations

from dataclasses import dataclass

from hidebench.config import Config, check_choice, check_float, check_int
from hidebench.scheme import EncryptionConfig
from hidebench.types import MODES, HidebenchError, private_slots

MODELS = ("lenet", "convnet", "resnet18")
DEFENSES = ("none", "mixup", "instahide")
UPDATES = ("gradient", "fedavg")
BN_MODES = ("train", "eval")


@dataclass
class ClientExperiment(Config):
    """One federated client and the update it shares.

    data: private data source spec (hidebench.data.load_source; 'lfw' needs no data root).
    model: the shared model (MODELS): DLG's sigmoid LeNet, a small ConvNet with BatchNorm, or
    ResNet-18 with a 32x32 stem. defense: DEFENSES; mode and k apply to Mixup/InstaHide (Mixup is
    always inside-dataset). batch_size: images in the client's batch. update: 'gradient' (one
    gradient on the batch) or 'fedavg' (local_steps full-batch SGD steps with local_lr; the
    weight difference is shared). bn_mode: BatchNorm in the client's forward pass, 'train'
    (the batch's statistics) or 'eval' (the shared running statistics). pretrain_steps: SGD
    steps on other images of the source before the round (0: untrained weights)."""

    section = "client"
    data: str = "lfw"
    model: str = "lenet"
    defense: str = "none"
    mode: str = "inside"
    k: int = 4
    batch_size: int = 1
    update: str = "gradient"
    local_steps: int = 1
    local_lr: float = 0.1
    bn_mode: str = "train"
    pretrain_steps: int = 0

    def validate(self):
        s = self.section
        if not self.data.strip():
            raise HidebenchError(f"{s}.data must name a data source, got {self.data!r}")
        check_choice(self.model, f"{s}.model", MODELS)
        check_choice(self.defense, f"{s}.defense", DEFENSES)
        check_choice(self.mode, f"{s}.mode", MODES)
        check_choice(self.update, f"{s}.update", UPDATES)
        check_choice(self.bn_mode, f"{s}.bn_mode", BN_MODES)
        self.batch_size = check_int(self.batch_size, f"{s}.batch_size", min=1)
        self.local_steps = check_int(self.local_steps, f"{s}.local_steps", min=1)
        self.local_lr = check_float(self.local_lr, f"{s}.local_lr", min=0, min_open=True)
        self.pretrain_steps = check_int(self.pretrain_steps, f"{s}.pretrain_steps", min=0)
        defended = self.defense != "none"
        self.k = check_int(self.k, f"{s}.k", min=2 if defended else 1)
        if self.defense == "mixup":
            self.mode = "inside"
        if defended:
            self.encryption_config()           # the scheme's own checks: k, mode, feasibility

    def encryption_config(self) -> EncryptionConfig:
        """The defense as an encryption scheme with one encryption (T=1) per private image."""
        return EncryptionConfig(k=self.k, mode=self.mode, scheme=self.defense, T=1)

    @property
    def n_private_needed(self) -> int:
        """Private images the client must hold: the batch, and enough to mix."""
        slots = 1 if self.defense == "none" else private_slots(self.mode, self.k)
        return max(self.batch_size, slots)

    @property
    def n_local_steps(self) -> int:
        """SGD steps behind the shared update (1 for a plain gradient)."""
        return self.local_steps if self.update == "fedavg" else 1


__all__ = ["BN_MODES", "DEFENSES", "MODELS", "UPDATES", "ClientExperiment"]
