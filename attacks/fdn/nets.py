"""The fusion-denoising network of Luo, Xiao, Wu, Liu, Ooi (AAAI 2022), torch (imported only
when fdn runs).

A group is a *set* of encryptions that hold one private image, each at its own coefficient l
(read from its label row), with its own augmentation, partner image, public patches and sign
mask. Every member goes through one shared encoder (its |e| / l, clipped, and l itself as
inputs: the sign mask leaves only magnitudes, and l says how much of the member is the image);
the members' feature maps are pooled by their mean and their maximum, which no order of the
members and no group size changes; a U-Net (hidebench.attacks.decoders.nets.UNet) conditioned
on the group's class then denoises the pooled maps into the signed private image.

The members of a batch of groups travel packed: one tensor of all members and the index of
each one's group, so groups of any sizes share a forward pass without padding.
"""
from __future__ import annotations

import torch
from torch import nn

from hidebench.attacks.decoders.nets import UNet

# |e| / l above this carries no more about the image (the member's coefficient is tiny): clipped.
RATIO_CLIP = 4.0


def member_inputs(abs_enc: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """N x C x H x W magnitudes |e| and N coefficients -> the encoder's N x (C + 1) x H x W
    inputs: |e| / l clipped at RATIO_CLIP, and l."""
    c = coef.clamp_min(1e-3)[:, None, None, None]
    ratio = (abs_enc / c).clamp(max=RATIO_CLIP)
    return torch.cat([ratio, c.expand(-1, 1, *abs_enc.shape[2:])], 1)


def pool_members(h: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Members' N x F x H x W features -> n_groups x 2F x H x W: each group's mean and maximum
    over its members (a group without members gets zeros)."""
    flat = h.flatten(1)
    idx = group[:, None].expand_as(flat)
    total = flat.new_zeros(n_groups, flat.shape[1]).index_add_(0, group, flat)
    count = torch.bincount(group, minlength=n_groups).clamp_min(1).to(flat.dtype)[:, None]
    peak = flat.new_zeros(n_groups, flat.shape[1]).scatter_reduce(0, idx, flat, reduce="amax", include_self=False)
    return torch.cat([total / count, peak], 1).view(n_groups, 2 * h.shape[1], *h.shape[2:])


class FusionNet(nn.Module):
    """(members' |e|, their coefficients, their group indices, each group's class one-hot) ->
    one image per group, B x 3 x H x W in [-1, 1]."""

    def __init__(self, n_classes: int, *, features: int = 16, width: int = 24, depth: int = 3, channels: int = 3):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(channels + 1, features, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(features, features, 3, padding=1), nn.SiLU())
        self.decoder = UNet(2 * features, channels, n_classes, width=width, depth=depth)

    def forward(self, abs_enc: torch.Tensor, coef: torch.Tensor, group: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        h = self.encoder(member_inputs(abs_enc, coef))
        return self.decoder(pool_members(h, group, len(cond)), cond)
