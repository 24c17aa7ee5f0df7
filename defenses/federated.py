"""Federated-learning client simulation for gradient-matching attacks.

A client holds private images, applies a defense (none, Mixup, InstaHide inside- or
cross-dataset, any k; Huang et al. 2020), and shares either one gradient of a shared model
on its (encrypted) batch with (mixed) soft labels, or a FedAvg update of several local SGD
steps (McMahan et al. 2017). The attacks in attacks/gradient invert what is shared
(Zhu et al. 2019 DLG; Geiping et al. 2020 Inverting Gradients). What the client does is a
`hidebench.defenses.client.ClientExperiment`; `simulate_client` runs one from an ExecutionContext (seed,
device, data root), deterministically.

BatchNorm mode (the threat model states it): 'train' normalises with the client's batch
statistics (what a training client does; the statistics are recorded in the update and
granted to the attacker only by the threat model), 'eval' with the shared running statistics.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hidebench.context import ExecutionContext
from hidebench.defenses.client import BN_MODES, DEFENSES, MODELS, UPDATES, ClientExperiment
from hidebench.defenses.utility.models import resnet18_32
from hidebench.types import HidebenchError, SecretKey

__all__ = ["BN_MODES", "DEFENSES", "MODELS", "UPDATES", "ClientBatch", "ClientExperiment", "ClientRun",
           "SharedUpdate", "client_update", "has_batchnorm", "local_update", "make_batch", "make_client_model", "pretrain",
           "public_patches", "record_bn_stats", "set_bn_mode", "simulate_client", "soft_cross_entropy",
           "to_numpy_images", "to_tensor"]


# ----------------------------------------------------------------------------- models
class LeNet(nn.Module):
    """DLG's LeNet variant (Zhu et al. 2019): three 5x5 convolutions with sigmoid, one linear
    layer; weights and biases drawn from U(-0.5, 0.5) as in the DLG code."""

    def __init__(self, n_classes: int = 10, width: int = 12, image_size: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(width, width, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(width, width, 5, padding=2, stride=1), nn.Sigmoid())
        self.fc = nn.Linear(width * ((image_size + 3) // 4) ** 2, n_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.uniform_(m.weight, -0.5, 0.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


class GeipingConvNet(nn.Module):
    """Small ConvNet (conv-BN-ReLU blocks with max pooling), after Geiping et al.'s 'ConvNet'
    (the client model 'convnet'; the utility's classifier is defenses.utility.models.ConvNet)."""

    def __init__(self, n_classes: int = 10, width: int = 16):
        super().__init__()
        w = width

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(*block(3, w), *block(w, 2 * w), nn.MaxPool2d(2), *block(2 * w, 4 * w),
                                  nn.MaxPool2d(2), *block(4 * w, 4 * w), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * w * 4 * 4, n_classes)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def make_client_model(name: str, n_classes: int, *, seed: int = 0, width: int | None = None, image_size: int = 32) -> nn.Module:
    """A model from MODELS with deterministic initial weights (image_size other than 32: LeNet only,
    for tiny tests)."""
    if name not in MODELS:
        raise HidebenchError(f"unknown model {name!r}; choose from {MODELS}")
    if int(n_classes) < 2:
        raise HidebenchError(f"n_classes must be >= 2, got {n_classes}")
    if image_size != 32 and name != "lenet":
        raise HidebenchError(f"model {name!r} takes 32x32 images, got image_size={image_size}")
    torch.manual_seed(seed)
    if name == "lenet":
        return LeNet(n_classes, width or 12, image_size)
    if name == "convnet":
        return GeipingConvNet(n_classes, width or 16)
    return resnet18_32(n_classes)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c y_c log softmax(logits)_c (mixed labels of Mixup/InstaHide)."""
    return -(soft_labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def pretrain(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, steps: int, lr: float = 0.01,
             batch_size: int = 32, seed: int = 0, device="cpu") -> dict:
    """Briefly train `model` in place (SGD with momentum, BN in train mode); returns a record."""
    if steps <= 0:
        return {"weights": "untrained", "pretrain_steps": 0}
    if len(images) == 0:
        raise HidebenchError("pretraining needs at least one image")
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = to_tensor(images, device), torch.as_tensor(labels, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (min(batch_size, len(x_all)),), generator=g).to(device)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"weights": "trained", "pretrain_steps": steps, "pretrain_lr": lr, "pretrain_images": len(images),
            "pretrain_loss_first": losses[0], "pretrain_loss_last": float(np.mean(losses[-10:]))}


def to_tensor(images_nhwc: np.ndarray, device="cpu") -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)),
                           device=device)


def to_numpy_images(x_nchw: torch.Tensor) -> np.ndarray:
    return x_nchw.detach().cpu().float().numpy().transpose(0, 2, 3, 1).copy()


# ----------------------------------------------------------------------------- client
@dataclass
class ClientBatch:
    """One client batch: private[i] is the image input[i] was made for (slot 0)."""

    private: np.ndarray        # B x 32 x 32 x 3 in [-1, 1]
    private_labels: np.ndarray  # B int64
    inputs: np.ndarray         # B x 32 x 32 x 3, what the model sees (encrypted under a defense)
    soft_labels: np.ndarray    # B x C float32
    key: SecretKey | None = None   # rows of the encryption key (None without a defense)


def make_batch(images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClientExperiment, *, seed: int = 0,
               public_patches: np.ndarray | None = None) -> ClientBatch:
    """Apply the defense to the client's private images; the batch is the first batch_size of them.

    Under Mixup/InstaHide each batch image i is encrypted once (T=1), mixed with other private
    images of the client (and public patches cross-dataset), as in the InstaHide reference code.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if cfg.batch_size > len(images):
        raise HidebenchError(f"batch size {cfg.batch_size} is larger than the client's {len(images)} private images")
    if len(images) < cfg.n_private_needed:
        raise HidebenchError(f"{cfg.defense} with k={cfg.k} {cfg.mode}-dataset needs {cfg.n_private_needed} "
                             f"private images, the client holds {len(images)}")
    B = cfg.batch_size
    if cfg.defense == "none":
        soft = np.eye(n_classes, dtype=np.float32)[labels[:B]]
        return ClientBatch(images[:B].copy(), labels[:B].copy(), images[:B].copy(), soft, None)
    from hidebench.defenses.instahide import encrypt

    ecfg = cfg.encryption_config()
    if cfg.mode == "cross" and public_patches is None:
        raise HidebenchError("cross-dataset InstaHide needs public patches (see hidebench.data.build_pool)")
    view, key = encrypt(images, labels, n_classes, ecfg, seed=seed, public_patches=public_patches)
    rows = np.argsort(key.selection[:, 0])[:B]   # row of the encryption made for private image i
    sub = SecretKey(private=key.private, private_labels=key.private_labels, selection=key.selection[rows],
                    lambdas=key.lambdas[rows], sign=key.sign[rows], seed=key.seed, n_private_slots=key.n_private_slots)
    return ClientBatch(images[:B].copy(), labels[:B].copy(), view.encryptions[rows], view.labels[rows], sub)


@dataclass
class SharedUpdate:
    """What the client sends. `gradient` is the gradient (FedSGD) or, for FedAvg, the
    pseudo-gradient (w_0 - w_T) / (local_lr * local_steps), in model.parameters() order.
    bn_stats: per BatchNorm layer (batch mean, batch variance) of the client's forward pass
    (train mode only); the attacker sees them only if the threat model grants them."""

    gradient: list[torch.Tensor]
    update: str
    n_samples: int
    local_steps: int = 1
    local_lr: float = 0.1
    bn_mode: str = "train"
    bn_stats: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def set_bn_mode(model: nn.Module, bn_mode: str) -> nn.Module:
    """Model in eval mode except BatchNorm layers, which follow bn_mode."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(bn_mode == "train")
    return model


def record_bn_stats(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, biased variance) of the input of every BatchNorm layer for batch x."""
    stats, hooks = [], []

    def hook(_m, inp, _out):
        h = inp[0].detach()
        stats.append((h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=False)))

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return stats


def local_update(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor,
                 steps: int, lr: float, *, create_graph: bool) -> list[torch.Tensor]:
    """Gradient (steps=1) or FedAvg pseudo-gradient (w_0 - w_T)/(lr*steps) of soft-label CE,
    via torch.autograd (differentiable when create_graph). Buffers are not updated."""
    from torch.func import functional_call

    names = list(params)
    cur = [params[n] for n in names]
    w0 = cur
    for _ in range(steps):
        bufs = {k: v.clone() for k, v in buffers.items()}
        loss = soft_cross_entropy(functional_call(model, ({**dict(zip(names, cur)), **bufs}), (x,)), y)
        g = torch.autograd.grad(loss, cur, create_graph=create_graph)
        if steps == 1:
            return list(g)
        cur = [p - lr * gi for p, gi in zip(cur, g)]
    return [(a - b) / (lr * steps) for a, b in zip(w0, cur)]


def client_update(model: nn.Module, batch: ClientBatch, cfg: ClientExperiment, *, device="cpu") -> SharedUpdate:
    """The update the client shares for its batch (the model itself is left unchanged)."""
    model = set_bn_mode(copy.deepcopy(model).to(device), cfg.bn_mode)
    x = to_tensor(batch.inputs, device)
    y = torch.as_tensor(batch.soft_labels, device=device)
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    grad = local_update(model, params, buffers, x, y, cfg.n_local_steps, cfg.local_lr, create_graph=False)
    bn = record_bn_stats(model, x) if cfg.bn_mode == "train" else []
    return SharedUpdate([g.detach() for g in grad], cfg.update, len(x), cfg.n_local_steps, cfg.local_lr, cfg.bn_mode,
                        bn)


# ----------------------------------------------------------------------------- one simulated client
PUBLIC_POOL = {"source": "photos", "region": 96, "screen": 60, "patch_mode": "resize", "min_keypoints": 20}


def public_patches(rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Public patches for a cross-dataset InstaHide client: scikit-image's embedded colour photos
    (PUBLIC_POOL), SIFT-screened as in hidebench.data.build_pool, so no data root is needed."""
    from hidebench.data import PoolConfig, build_pool

    pool = build_pool(PoolConfig(**PUBLIC_POOL), rng, progress=False)
    return pool.patches(rng, n)[0]


@dataclass
class ClientRun:
    """A simulated client after one round: the shared model (as the server holds it), the update
    the client sent, its batch (private images, inputs, soft labels, key rows), and what the run
    record needs about the data and the weights."""

    experiment: ClientExperiment
    model: nn.Module
    update: SharedUpdate
    batch: ClientBatch
    n_classes: int
    class_names: list
    data: dict             # source, fingerprint, indices of the batch's private images
    weights: dict          # pretrain record ('untrained' or the training it had)
    device: str
    timings: dict = field(default_factory=dict)

    @property
    def defense_k(self) -> int | None:
        """The defense's k (None without a defense): what UpdateThreatModel.knows_k may grant."""
        return None if self.experiment.defense == "none" else self.experiment.k


def simulate_client(exp: ClientExperiment, ctx: ExecutionContext | None = None) -> ClientRun:
    """Run one client round: draw its private images from exp.data (and, with pretrain_steps,
    other images of the source to pretrain the shared model), build the model with seeded
    weights, apply the defense, and compute the shared update on ctx's device.

    Deterministic from ctx.seed: one numpy Generator draws the images, then (cross-dataset)
    the public patches; the model's initial weights, the pretraining and the encryption are
    seeded with ctx.seed too."""
    from hidebench.data import load_source, source_size

    exp = ClientExperiment.from_dict(exp) if not isinstance(exp, ClientExperiment) else exp
    ctx = ctx or ExecutionContext.from_env()
    device = ctx.torch_device()
    seed = ctx.seed
    t0 = time.perf_counter()
    n_total = source_size(exp.data, data_root=ctx.data_root)
    need = exp.n_private_needed
    if exp.batch_size > n_total:
        raise HidebenchError(f"batch size {exp.batch_size} is larger than the data source {exp.data!r} "
                             f"({n_total} images)")
    if need > n_total:
        raise HidebenchError(f"{exp.defense} with k={exp.k} needs {need} private images; {exp.data!r} has {n_total}")
    rng = np.random.default_rng(seed)
    n_pre = min(max(0, n_total - need), 512) if exp.pretrain_steps else 0
    idx = rng.choice(n_total, need + n_pre, replace=False)
    data = load_source(exp.data, data_root=ctx.data_root, indices=np.sort(idx), progress=ctx.progress)
    order = np.argsort(np.argsort(idx))        # positions of idx within the sorted load
    images, labels = data.images[order], data.labels[order]
    n_classes = len(data.classes)
    patches = public_patches(rng) if exp.defense == "instahide" and exp.mode == "cross" else None

    model = make_client_model(exp.model, n_classes, seed=seed).to(device)
    weights = pretrain(model, images[need:], labels[need:], steps=exp.pretrain_steps, seed=seed, device=device)
    batch = make_batch(images[:need], labels[:need], n_classes, exp, seed=seed, public_patches=patches)
    t1 = time.perf_counter()
    update = client_update(model, batch, exp, device=device)
    t2 = time.perf_counter()
    return ClientRun(exp, model, update, batch, n_classes, list(data.classes),
                     {"source": exp.data, "fingerprint": data.fingerprint, "indices": idx[:need].tolist()},
                     weights, str(device), {"setup_s": t1 - t0, "client_s": t2 - t1})
