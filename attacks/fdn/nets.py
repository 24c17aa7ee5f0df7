"""The fusion-denoising network of Luo, Xiao, Wu, Liu, Ooi (AAAI 2022), torch (imported only
when fdn runs).

A group is a *set* of encryptions that hold one private image, each at its own coefficient l
(read from its label row), with its own augmentation, partner image, public patches and sign
mask. Every member goes through one shared encoder (its |e| / l, clipped, l itself and the
label row's other private weight as inputs: the sign mask leaves only magnitudes, and l says how
much of the member is the image); the members' feature maps are pooled by their mean and their
maximum, which no order of the members and no group size changes; a U-Net
(hidebench.attacks.decoders.nets.UNet) conditioned on the group's class then denoises the pooled
maps into the signed private image.

Registration (releases with data augmentation): each member holds its own crop of the image,
shifted by up to PAD pixels, so a plain mean over members blurs the image by a 9 x 9 box. The
pad strips that a crop brings in (pixels at -1, full weight l in |e|) show where a member's
image sits: a small head reads each member's row and column profiles and predicts its shift
(dy, dx), trained on the attacker's simulated members whose shifts it knows; each member is
shifted back by the predicted shift (zeros and a validity mask where it has no pixels) before
the encoder. Flips cannot be told apart this way and stay for the denoiser.

The members of a batch of groups travel packed: one tensor of all members and the index of
each one's group, so groups of any sizes share a forward pass without padding.
"""
from __future__ import annotations

import torch
from torch import nn

from hidebench.attacks.decoders.nets import UNet
from hidebench.defenses.augment import PAD

# |e| / l above this carries no more about the image (the member's coefficient is tiny): clipped.
RATIO_CLIP = 4.0
# Per-member scalars broadcast as input channels: l and the label row's other private weight.
SCALARS = 2


def member_inputs(abs_enc: torch.Tensor, coef: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x C x H x W |e| / l clipped at RATIO_CLIP, N x 2 x H x W channels of l and the other
    private weight) for N members' magnitudes |e| and coefficients."""
    c = coef.clamp_min(1e-3)[:, None, None, None]
    ratio = (abs_enc / c).clamp(max=RATIO_CLIP)
    scalars = torch.stack([coef, other], 1)[:, :, None, None].expand(-1, -1, *abs_enc.shape[2:])
    return ratio, scalars


def shift_back(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Undo per-member shifts: out[n, :, y, x] = x[n, :, y - dy_n, x - dx_n], zero outside
    (the inverse of hidebench.defenses.augment.shift_flip's shift, |dy|, |dx| <= PAD)."""
    N, _, H, W = x.shape
    padded = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    rows = (PAD - dy)[:, None] + torch.arange(H, device=x.device)[None]           # N x H
    cols = (PAD - dx)[:, None] + torch.arange(W, device=x.device)[None]           # N x W
    n = torch.arange(N, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class Registration(nn.Module):
    """Per member, logits of its image's shift dy and dx over -PAD..PAD, from the row and
    column profiles of three 3 x 3 convolutions of its inputs."""

    def __init__(self, in_ch: int, width: int, size: int = 32):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.dy = nn.Linear(width * size, 2 * PAD + 1)
        self.dx = nn.Linear(width * size, 2 * PAD + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.dy(h.mean(3).flatten(1)), self.dx(h.mean(2).flatten(1))


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
    """(members' |e|, their coefficients and other private weights, their group indices, each
    group's class one-hot) -> one image per group, B x C x H x W in [-1, 1]; with `register`,
    also each member's shift logits (dy, dx), for the registration's training loss."""

    def __init__(self, n_classes: int, *, features: int = 16, width: int = 24, depth: int = 3, channels: int = 3,
                 register: bool = False, register_width: int = 16):
        super().__init__()
        self.registration = Registration(channels + SCALARS, register_width) if register else None
        self.encoder = nn.Sequential(nn.Conv2d(channels + 1 + SCALARS, features, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(features, features, 3, padding=1), nn.SiLU())
        self.decoder = UNet(2 * features, channels, n_classes, width=width, depth=depth)

    def forward(self, abs_enc: torch.Tensor, coef: torch.Tensor, other: torch.Tensor, group: torch.Tensor,
                cond: torch.Tensor):
        ratio, scalars = member_inputs(abs_enc, coef, other)
        mask = torch.ones_like(ratio[:, :1])
        logits = None
        if self.registration is not None:
            logits = self.registration(torch.cat([ratio, scalars], 1))
            dy, dx = (lg.detach().argmax(1) - PAD for lg in logits)
            aligned = shift_back(torch.cat([ratio, mask], 1), dy, dx)
            ratio, mask = aligned[:, :-1], aligned[:, -1:]
        h = self.encoder(torch.cat([ratio, mask, scalars], 1))
        return self.decoder(pool_members(h, group, len(cond)), cond), logits
