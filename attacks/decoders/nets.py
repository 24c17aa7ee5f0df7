"""The networks of the learned decoders (torch; imported only when a decoder runs).

* `UNet`: encoder-decoder with skip connections (Ronneberger et al. 2015), conditioned on the
  encryption's label row (the private coefficients and classes it publishes): the row is
  broadcast as extra input channels and added to the bottleneck through a linear map.
  GroupNorm, so a prediction never depends on the other images of its batch.
* `PatchDiscriminator`: the pix2pix PatchGAN (Isola et al. 2017): a small fully convolutional
  classifier of overlapping patches of an (input, output) pair, real or generated.
"""
from __future__ import annotations

import torch
from torch import nn


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU())


class UNet(nn.Module):
    """in_ch image channels + cond_dim conditioning values -> out_ch channels.

    `depth` halvings of the resolution, `width` channels at full resolution, doubled per level
    (at most 8 x width). residual: the output is the input image (tiled to out_ch channels)
    plus a correction, unbounded (callers clip): a Mixup decoder then starts from the mixture,
    already a fair estimate of its heaviest image, instead of from nothing. Otherwise tanh."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, *, width: int = 32, depth: int = 3,
                 residual: bool = False):
        super().__init__()
        if residual and out_ch % in_ch:
            raise ValueError(f"a residual U-Net needs out_ch a multiple of in_ch, got {out_ch} and {in_ch}")
        self.residual = residual
        chs = [width * min(2 ** i, 8) for i in range(depth + 1)]
        self.cond_dim = cond_dim
        self.down = nn.ModuleList()
        c = in_ch + cond_dim
        for ch in chs[:-1]:
            self.down.append(_Block(c, ch))
            c = ch
        self.pool = nn.AvgPool2d(2)
        self.mid = _Block(c, chs[-1])
        self.cond = nn.Linear(cond_dim, chs[-1]) if cond_dim else None
        self.up = nn.ModuleList()
        c = chs[-1]
        for ch in reversed(chs[:-1]):
            self.up.append(nn.ModuleDict({"reduce": nn.Conv2d(c, ch, 1), "block": _Block(2 * ch, ch)}))
            c = ch
        self.head = nn.Conv2d(c, out_ch, 1)
        if residual:                       # start as the identity on the input image
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        image = x
        if self.cond_dim:
            x = torch.cat([x, cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mid(x)
        if self.cond is not None:
            x = x + self.cond(cond)[:, :, None, None]
        for level, skip in zip(self.up, reversed(skips)):
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = level["block"](torch.cat([level["reduce"](x), skip], 1))
        out = self.head(x)
        if self.residual:
            return out + image.repeat(1, out.shape[1] // image.shape[1], 1, 1)
        return torch.tanh(out)


class PatchDiscriminator(nn.Module):
    """(condition, image) -> a grid of real/fake logits, one per overlapping patch."""

    def __init__(self, in_ch: int, *, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), _norm(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), _norm(4 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, padding=1))

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], 1))
