"""The fast utility recipe: an independent reimplementation of airbench (Keller Jordan, "94% on
CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498; reference code MIT-licensed,
github.com/KellerJordan/cifar10-airbench), written from notes on its recipe, no code copied.

What is here, each used by hidebench.defenses.utility.training when utility.model is "fast":
- FastNet: a frozen 2x2 patch-whitening convolution (its filters set from training patches, a
  trainable bias for the first epochs), then three conv-pool-BN-GELU groups whose convolutions
  start as identities on their first channels, a max pool and a bias-free linear head whose
  logits are scaled by 1/9. BatchNorm: fixed scale 1, trained shift, fast running statistics.
- patch_whitening: the whitening filters from the uncentered covariance of 2x2 patches.
- Lookahead: every few steps the weights are pulled to an exponential average of themselves,
  the pull growing as (step / total)^3 (airbench's, from hlb-CIFAR10).
- smooth_labels: label smoothing for soft (mixed) targets.
- tta_logits: test-time augmentation, logits averaged over flipped (and shifted) views.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-12
BN_MOMENTUM = 0.4                  # torch's convention: running = 0.6 * running + 0.4 * batch
LOGIT_SCALE = 1 / 9
WHITEN_EPS = 5e-4                  # relative to the mean patch variance (airbench: 5e-4 on standardised pixels)
LOOKAHEAD_EVERY = 5
LOOKAHEAD_DECAY = 0.95 ** 5


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 (only the shift trains), eps 1e-12, momentum 0.4."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)


def _dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3x3 'same' convolution whose first min(c_in, c_out) filters start as the identity on
    their input channel (the rest keep torch's default initialisation)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    n = min(c_in, c_out)
    with torch.no_grad():
        conv.weight[:n] = 0
        conv.weight[torch.arange(n), torch.arange(n), 1, 1] = 1
    return conv


class ConvGroup(nn.Sequential):
    """conv -> 2x2 max pool -> BN -> GELU -> conv -> BN -> GELU (the pool before the first BN)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(_dirac_conv(c_in, c_out), nn.MaxPool2d(2), BatchNorm(c_out), nn.GELU(),
                         _dirac_conv(c_out, c_out), BatchNorm(c_out), nn.GELU())


class FastNet(nn.Module):
    """airbench's network (widths (64, 256, 256) there; the airbench93 widths (64, 128, 128) fit a
    CPU), for any input size: a 32x32 image becomes 31 -> 15 -> 7 -> 3 pixels, then a global max
    pool. `whiten` must be set with `set_whitening` before training."""

    def __init__(self, n_classes: int, widths=(64, 128, 128), in_channels: int = 3):
        super().__init__()
        n_patch = in_channels * 4
        self.whiten = nn.Conv2d(in_channels, 2 * n_patch, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        chans = (2 * n_patch, *widths)
        self.groups = nn.Sequential(*(ConvGroup(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.head = nn.Linear(widths[-1], n_classes, bias=False)

    def set_whitening(self, filters: torch.Tensor) -> None:
        """filters: (C*4) x C x 2 x 2 whitening filters; the layer applies them and their negatives
        (with the GELU after it, a smooth CReLU that keeps both signs of every component)."""
        with torch.no_grad():
            self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def norm_biases(self) -> list[nn.Parameter]:
        """The BatchNorm shifts, trained with a much larger learning rate."""
        return [m.bias for m in self.modules() if isinstance(m, BatchNorm)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(torch.amax(x, dim=(2, 3))) * LOGIT_SCALE


@torch.no_grad()
def patch_whitening(images: torch.Tensor, eps: float = WHITEN_EPS, chunk: int = 256) -> torch.Tensor:
    """Whitening filters for the 2x2 patches (stride 1) of `images` (N x C x H x W): with the
    uncentered patch covariance C = V diag(l) V^T, filter i is v_i / sqrt(l_i + eps * mean(l)),
    so the filtered patches have covariance diag(l / (l + eps * mean(l))), the identity up to
    the regulariser (exactly so for eps=0). Accumulated over chunks of images (little memory)."""
    c = images.shape[1]
    cov = torch.zeros(4 * c, 4 * c, dtype=torch.float64)
    n = 0
    for a in range(0, len(images), chunk):
        p = F.unfold(images[a: a + chunk].double().cpu(), 2).transpose(1, 2).reshape(-1, 4 * c)
        cov += p.T @ p
        n += len(p)
    cov /= n
    lam, vec = torch.linalg.eigh(cov)
    lam, vec = lam.flip(0), vec.flip(1)                    # largest component first
    filters = vec.T / torch.sqrt(lam.clamp_min(0) + eps * lam.mean())[:, None]
    return filters.reshape(4 * c, c, 2, 2).float()          # unfold's order: channel, then the 2x2 taps


class Lookahead:
    """Every LOOKAHEAD_EVERY optimiser steps: avg <- d * avg + (1 - d) * weights, weights <- avg,
    with d = 0.95^5 * (step / total)^3 (nothing early, a strong pull at the end); `finish` sets
    the weights to the average. Covers every float tensor of the state dict, BatchNorm running
    statistics included, so the model tested is the averaged one."""

    def __init__(self, model: nn.Module, total_steps: int):
        self.model, self.total = model, max(int(total_steps), 1)
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, decay: float) -> None:
        state = self.model.state_dict()
        for k, a in self.avg.items():
            a.lerp_(state[k], 1 - decay)
            state[k].copy_(a)

    def step(self, step: int) -> None:
        """Call after optimiser step number `step` (counted from 1)."""
        if step % LOOKAHEAD_EVERY == 0:
            self.update(LOOKAHEAD_DECAY * (step / self.total) ** 3)

    def finish(self) -> None:
        self.update(1.0)

    def state_dict(self) -> dict:
        return dict(self.avg)

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.avg):
            raise ValueError("lookahead state has other tensors than the model")
        for k, v in state.items():
            self.avg[k].copy_(v)


def smooth_labels(targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing of soft targets (B x n_classes): t' = (1 - eps) t + eps * sum(t) / n.
    For a one-hot target this is ordinary label smoothing; for a mixed label it is the same mix
    of the smoothed one-hot labels (smoothing commutes with mixing), and it keeps each target's
    total mass (a cross-dataset InstaHide label, whose public patches carry no label, stays
    lighter than 1)."""
    return (1 - eps) * targets + eps * targets.sum(1, keepdim=True) / targets.shape[1]


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over test-time views (airbench's levels): 0 the image alone; 1 the image
    and its mirror image; 2 half of level 1 plus half the mean of level 1 on the image shifted one
    pixel up-left and down-right (reflect-padded), six passes in all."""
    def mirror(v):
        return model(v) if level == 0 else 0.5 * (model(v) + model(v.flip(-1)))

    out = mirror(x)
    if level >= 2:
        h, w = x.shape[-2:]
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        out = 0.5 * out + 0.25 * (mirror(pad[..., :h, :w]) + mirror(pad[..., 2:, 2:]))
    return out
