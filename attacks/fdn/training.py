"""Training of the fusion-denoising network, through the model cache (torch; imported only when
fdn runs or carlini recovers by fusion).

The network trains on the attacker's simulated groups (groups.GroupSampler) with the decoders'
loss (L1 + ssim_weight (1 - SSIM), hidebench.attacks.decoders.training.decompose_loss), Adam on
a cosine schedule and the decoders' loop; `fusion_network` loads it from the model cache (keyed
by the public scheme, the attacker's data, the release's T, the config and the seed) or trains
and stores it, so a second release of the same scheme reuses it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.decoders.training import Trained, cached_model, decompose_loss, train_adam
from hidebench.attacks.fdn.config import FusionConfig
from hidebench.attacks.fdn.groups import UNKNOWN_SHIFT, GroupSampler, PackedGroups
from hidebench.attacks.fdn.nets import FusionNet
from hidebench.defenses.augment import PAD
from hidebench.types import ImageSet, PublicView


def to_device(abs_enc: np.ndarray, groups: PackedGroups, n_classes: int, device):
    """The network's inputs: members' |e| (NCHW), coefficients, other private weights, group
    indices, class one-hots."""
    x = torch.as_tensor(np.ascontiguousarray(abs_enc[groups.rows], dtype=np.float32), device=device).permute(0, 3, 1, 2)
    cond = torch.zeros(groups.n_groups, n_classes, device=device)
    known = np.flatnonzero(np.asarray(groups.classes) >= 0)
    cond[known, np.asarray(groups.classes)[known]] = 1.0
    return (x, torch.as_tensor(groups.coef, dtype=torch.float32, device=device),
            torch.as_tensor(groups.other, dtype=torch.float32, device=device),
            torch.as_tensor(groups.group, dtype=torch.int64, device=device), cond)


def shift_loss(logits, shifts: np.ndarray, device) -> tuple[torch.Tensor, float]:
    """Cross-entropy of the registration's (dy, dx) logits against the members' known shifts
    (unknown ones ignored), and the share of known members whose shift it gets exactly."""
    t = torch.as_tensor(np.where(shifts == UNKNOWN_SHIFT, -1, shifts + PAD), dtype=torch.int64, device=device)
    known = t[:, 0] >= 0
    if not bool(known.any()):
        return logits[0].sum() * 0, float("nan")
    loss = sum(nn.functional.cross_entropy(lg[known], t[known, i]) for i, lg in enumerate(logits))
    hit = torch.stack([lg[known].argmax(1) == t[known, i] for i, lg in enumerate(logits)], 1).all(1)
    return loss, float(hit.float().mean())


def train_fusion(net: FusionNet, sampler: GroupSampler, cfg: FusionConfig, n_classes: int, *, device, seed: int,
                 progress: bool) -> dict:
    """Adam on batches of simulated groups; curves per epoch: the loss, the L1 part of it and,
    with registration, the shift loss (weighted by training.shift_weight) and the share of
    members whose shift the registration gets exactly."""
    t = cfg.training

    def batch_loss():
        b = sampler.draw(t.batch_size)
        out, logits = net(*to_device(b.abs_enc, b.groups, n_classes, device))
        target = torch.as_tensor(b.targets, device=device).permute(0, 3, 1, 2)
        loss = decompose_loss(out[:, None], target[:, None], t.ssim_weight)
        values = {"loss": float(loss.detach()), "l1": float((out.detach() - target).abs().mean())}
        if logits is not None:
            sl, acc = shift_loss(logits, b.groups.shifts, device)
            loss = loss + t.shift_weight * sl
            values.update(shift_loss=float(sl.detach()), shift_accuracy=acc)
        return loss, values

    return train_adam(net, t, batch_loss, seed=seed, desc="fdn: training fusion network", progress=progress)


def fusion_network(view: PublicView, aux: ImageSet, pool, cfg: FusionConfig, ctx, device, *, seed: int,
                   data_spec: dict) -> Trained:
    """The fusion network for the release's scheme and T (from ctx's model cache, or trained on
    `aux` with public patches from `pool`; data_spec: the attacker's data in the cache key)."""
    n_classes = view.labels.shape[1]
    register = cfg.net.registers(view.augment)
    scheme = {"k": view.k, "mode": view.mode, "scheme": view.scheme, "c1": view.c1, "c2": view.c2,
              "augment": view.augment}
    spec = {"scheme": scheme, "T": int(view.T), "n_classes": n_classes, **data_spec, "config": cfg.model_dict(),
            "register": register, "seed": seed}

    def make():
        return FusionNet(n_classes, features=cfg.net.features, width=cfg.net.width, depth=cfg.net.depth,
                         channels=view.encryptions.shape[-1], register=register,
                         register_width=cfg.net.register_width)

    def train(net):
        data = AttackerEncryptions(view, aux, n_images=cfg.groups.round_images, T=int(view.T), pool=pool, seed=seed)
        sampler = GroupSampler(data, cfg.groups, int(view.T), seed)
        return train_fusion(net, sampler, cfg, n_classes, device=device, seed=seed, progress=ctx.progress)

    return cached_model("fdn_fusion", spec, make, train, ctx, device, seed=seed)


@torch.no_grad()
def fuse(trained: Trained, abs_enc: np.ndarray, groups: PackedGroups, n_classes: int, *, batch: int, device,
         progress: bool) -> np.ndarray:
    """Each group's fused image (n_groups x H x W x C in [-1, 1]), `batch` groups a pass."""
    from hidebench.progress import bar

    net = trained.net.eval()
    out = []
    for a in bar(range(0, groups.n_groups, batch), enabled=progress, desc="fdn: fusing groups", leave=False):
        sub = groups.select(np.arange(a, min(a + batch, groups.n_groups)))
        out.append(net(*to_device(abs_enc, sub, n_classes, device))[0].permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,) + abs_enc.shape[1:], np.float32)
