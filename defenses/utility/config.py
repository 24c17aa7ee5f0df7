"""What `hidebench utility` trains and how: the `[utility]` section of a sweep, `--set` of the
command. The default model, "fast", is a reimplementation of airbench (Jordan 2024, arXiv
2404.00498) sized for 2 CPU cores; "convnet" is the earlier small ConvNet; the InstaHide authors
train ResNet-18 for 200 epochs (Huang et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass, field

from hidebench.config import Config, check_auto, check_bool, check_choice, check_float, check_int
from hidebench.resources import IMAGE_BYTES, check_memory
from hidebench.types import HidebenchError

MODELS = ("fast", "convnet", "resnet18")
SCHEDULES = ("cosine", "triangle", "step")
PRECISIONS = ("fp32", "bf16")
FLIPS = ("random", "alternate")

# "auto" resolves to the model's value here. fast: airbench's hyperparameters -- lr 1.5 for the mean
# loss at batch 1024, scaled to the batch; weight decay 0.0153 per 1024 examples per step over that
# lr, i.e. 0.0153 / 11.5 at any batch; momentum 0.85; label smoothing 0.2; lr ramp 0.2 -> 1 over 23%
# of the steps, then down to 0.07 -- with 10 epochs at batch 512 and widths 64/256/256 (airbench94's), which
# reach test accuracy 0.90 on CIFAR-10 in about 10 minutes of 2 CPU cores (docs/results.md).
# convnet / resnet18: the earlier recipe.
_CLASSIC = dict(epochs=12, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, warmup_epochs=1.0,
                schedule="cosine", label_smoothing=0.0, lookahead=False, tta=0, precision="fp32", flip="random",
                translate=4)
MODEL_DEFAULTS = {
    "fast": dict(epochs=10, batch_size=512, lr=None, momentum=0.85, weight_decay=0.0153 / 11.5, warmup_epochs=None,
                 schedule="triangle", label_smoothing=0.2, lookahead=True, tta=2, precision="bf16", flip="alternate",
                 translate=2),
    "convnet": _CLASSIC,
    "resnet18": _CLASSIC,
}
FAST_LR_PER_1024 = 1.5             # airbench's 11.5 / (1024 (1 + 1 / (1 - 0.85))) per summed-loss example, x 1024
FAST_WARMUP = 0.23                 # share of the steps over which the triangle schedule ramps up


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """cfg.batch_size, lowered to a quarter of a small training set (e.g. the 100 images of the
    embedded LFW half) so that an epoch takes at least 4 steps."""
    return max(1, min(batch_size, n_train // 4))


@dataclass
class UtilityConfig(Config):
    """model: fast (airbench-style, the default), convnet or resnet18. Keys set to "auto" take the
    model's value (MODEL_DEFAULTS; `resolved()` fills them in). epochs: full passes over the
    training set, each with fresh augmentation and fresh encryptions, so an image is encrypted
    `epochs` times (T = epochs). SGD with Nesterov momentum and weight decay; schedule: cosine
    (linear warm-up over `warmup_epochs`, cosine decay to zero), triangle (airbench: 0.2 -> 1 over
    `warmup_epochs`, then linearly to 0.07) or step (the authors': lr / 10 at 50% and 75% of the
    epochs). label_smoothing: smoothing of the (mixed) soft targets. lookahead: airbench's
    lookahead averaging. tta: test-time views (0 plain, 1 + mirror, 2 + one-pixel shifts).
    precision: bf16 autocast (CPU and CUDA) or fp32. translate / flip: augmentation shift range
    (pixels, black padding) and flip (random, or alternate: a random flip the first epoch, the
    opposite the next). K: encryptions of each test image whose predictions are averaged for the
    encrypted test accuracy (the authors advise 10-20). train / test: data sources (None: the
    recipe's source's train and test splits).

    Only the fast model: widths (its three conv groups), bias_lr_scale (learning-rate factor of
    the BatchNorm shifts, same absolute weight decay), whiten_bias_epochs (epochs its whitening
    bias trains), whiten_images (training inputs the whitening is computed from). Only convnet:
    width (first-stage channels)."""

    section = "utility"
    model: str = "fast"
    width: int = 24
    widths: list = field(default_factory=lambda: [64, 256, 256])
    epochs: int | str = "auto"
    batch_size: int | str = "auto"
    lr: float | str = "auto"
    momentum: float | str = "auto"
    weight_decay: float | str = "auto"
    warmup_epochs: float | str = "auto"
    schedule: str = "auto"
    label_smoothing: float | str = "auto"
    lookahead: bool | str = "auto"
    tta: int | str = "auto"
    precision: str = "auto"
    flip: str = "auto"
    translate: int | str = "auto"
    bias_lr_scale: float = 64.0
    whiten_bias_epochs: int = 3
    whiten_images: int = 5000
    augment: bool = True
    K: int = 10
    eval_batch: int = 500
    train: str | None = None
    test: str | None = None

    def validate(self):
        check_choice(self.model, "utility.model", MODELS)
        self.width = check_int(self.width, "utility.width", min=4)
        if not (isinstance(self.widths, (list, tuple)) and len(self.widths) == 3):
            raise HidebenchError(f"utility.widths must be a list of 3 channel counts, got {self.widths!r}")
        self.widths = [check_int(w, "utility.widths[]", min=4, max=4096) for w in self.widths]
        self.epochs = check_auto(self.epochs, "utility.epochs", lambda v, n: check_int(v, n, min=1))
        self.batch_size = check_auto(self.batch_size, "utility.batch_size", lambda v, n: check_int(v, n, min=2))
        check_auto(self.lr, "utility.lr", lambda v, n: check_float(v, n, min=0, min_open=True))
        check_auto(self.momentum, "utility.momentum", lambda v, n: check_float(v, n, min=0, max=1))
        check_auto(self.weight_decay, "utility.weight_decay", lambda v, n: check_float(v, n, min=0))
        check_auto(self.warmup_epochs, "utility.warmup_epochs", lambda v, n: check_float(v, n, min=0))
        check_choice(self.schedule, "utility.schedule", ("auto", *SCHEDULES))
        check_auto(self.label_smoothing, "utility.label_smoothing", lambda v, n: check_float(v, n, min=0, max=1, max_open=True))
        check_auto(self.lookahead, "utility.lookahead", check_bool)
        self.tta = check_auto(self.tta, "utility.tta", lambda v, n: check_int(v, n, min=0, max=2))
        check_choice(self.precision, "utility.precision", ("auto", *PRECISIONS))
        check_choice(self.flip, "utility.flip", ("auto", *FLIPS))
        self.translate = check_auto(self.translate, "utility.translate", lambda v, n: check_int(v, n, min=0, max=8))
        check_float(self.bias_lr_scale, "utility.bias_lr_scale", min=0, min_open=True)
        self.whiten_bias_epochs = check_int(self.whiten_bias_epochs, "utility.whiten_bias_epochs", min=0)
        self.whiten_images = check_int(self.whiten_images, "utility.whiten_images", min=1, max=50000)
        check_bool(self.augment, "utility.augment")
        self.K = check_int(self.K, "utility.K", min=1)
        self.eval_batch = check_int(self.eval_batch, "utility.eval_batch", min=1)
        r = self.resolved()
        channels = max(r.widths) * 2 if r.model == "fast" else 16 * r.width
        check_memory(r.batch_size * IMAGE_BYTES * channels, f"utility.batch_size={r.batch_size}")
        check_memory(self.eval_batch * IMAGE_BYTES * channels // 4, f"utility.eval_batch={self.eval_batch}")

    def resolved(self, n_train: int | None = None) -> UtilityConfig:
        """This config with every "auto" replaced by the model's value (what training uses and
        what a record stores); given the training set's size, the batch size is the effective
        one, and the fast model's automatic learning rate follows it (airbench's lr is per example)."""
        values = {k: v for k, v in MODEL_DEFAULTS[self.model].items() if getattr(self, k) == "auto"}
        batch = values.get("batch_size", self.batch_size)
        if n_train is not None and effective_batch_size(batch, n_train) != batch:
            batch = values["batch_size"] = effective_batch_size(batch, n_train)
        epochs = values.get("epochs", self.epochs)
        if values.get("lr", 0) is None:
            values["lr"] = FAST_LR_PER_1024 * batch / 1024
        if values.get("warmup_epochs", 0) is None:
            values["warmup_epochs"] = FAST_WARMUP * epochs
        if not values:
            return self
        return self.replace(**values)
