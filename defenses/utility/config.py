"""What `hidebench utility` trains and how: the `[utility]` section of a sweep, `--set` of the
command. Defaults train the small ConvNet on CIFAR-10 in about a quarter of an hour on 2 CPU
cores; the InstaHide authors train ResNet-18 for 200 epochs (Huang et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass

from hidebench.config import Config, check_bool, check_choice, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory

MODELS = ("convnet", "resnet18")


@dataclass
class UtilityConfig(Config):
    """model: convnet or resnet18 (width: the ConvNet's first-stage channels). epochs: full
    passes over the training set, each with fresh augmentation and fresh encryptions, so an
    image is encrypted `epochs` times (T = epochs). SGD with momentum and weight decay, a linear
    warm-up over the first `warmup_epochs` and a cosine decay to zero. K: encryptions of each test
    image whose predictions are averaged for the encrypted test accuracy (the authors advise 10-20).
    train / test: data sources (None: the recipe's source's train and test splits)."""

    section = "utility"
    model: str = "convnet"
    width: int = 24
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    augment: bool = True
    K: int = 10
    eval_batch: int = 500
    train: str | None = None
    test: str | None = None

    def validate(self):
        check_choice(self.model, "utility.model", MODELS)
        self.width = check_int(self.width, "utility.width", min=4)
        self.epochs = check_int(self.epochs, "utility.epochs", min=1)
        self.batch_size = check_int(self.batch_size, "utility.batch_size", min=2)
        check_float(self.lr, "utility.lr", min=0, min_open=True)
        check_float(self.momentum, "utility.momentum", min=0, max=1)
        check_float(self.weight_decay, "utility.weight_decay", min=0)
        check_float(self.warmup_epochs, "utility.warmup_epochs", min=0)
        check_bool(self.augment, "utility.augment")
        self.K = check_int(self.K, "utility.K", min=1)
        self.eval_batch = check_int(self.eval_batch, "utility.eval_batch", min=1)
        check_memory(self.batch_size * IMAGE_BYTES * 16 * self.width, f"utility.batch_size={self.batch_size}")
        check_memory(self.eval_batch * IMAGE_BYTES * 4 * self.width, f"utility.eval_batch={self.eval_batch}")
