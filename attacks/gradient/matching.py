"""The torch machinery of the gradient-matching attacks: gradient distance (GradientMatcher),
total variation, and analytic label recovery. Imported by GradientAttack.run, never at package
import time.

Gradient matching: find dummy inputs x' (and labels y') whose gradient on the shared model
matches the shared one (Zhu et al. 2019, "Deep Leakage from Gradients"; Geiping et al. 2020,
"Inverting Gradients"). Label recovery: iDLG (Zhao et al. 2020) for one image, the sign of
the last layer's gradient; for larger batches a label-count heuristic (mean label = mean
prediction - bias gradient, cf. Wainakh et al. 2022 "User-level label leakage"). The update
may be a hidebench.defenses.federated.SharedUpdate or the hidebench.threat.AttackerUpdate built from it
(both carry gradient, local_steps, local_lr, bn_mode and bn_stats; the latter None or empty
when not granted).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from hidebench.attacks.gradient.options import DISTANCES, IMPLS, LABEL_MODES
from hidebench.defenses.federated import local_update, set_bn_mode, soft_cross_entropy
from hidebench.types import HidebenchError


def attacker_model(model: nn.Module, bn_mode: str, device) -> nn.Module:
    """A copy of the shared model in the client's BatchNorm mode. In train mode BN stops tracking
    running statistics (same output, no in-place buffer writes, so torch.func can transform it)."""
    import copy

    m = set_bn_mode(copy.deepcopy(model).to(device), bn_mode)
    if bn_mode == "train":
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.track_running_stats = False
                mod.running_mean = mod.running_var = mod.num_batches_tracked = None
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of ... x C x H x W images, mean absolute neighbour difference (per leading index)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(-3).mean(-1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(-3).mean(-1)
    return dx + dy


class GradientMatcher:
    """Gradient distance between the shared update and that of dummy data, per restart.

    loss(X, Y) takes X: R x B x C x H x W and Y: R x B x n_classes (probabilities) and returns R
    distances. impl='func' computes all R restarts at once with torch.func (vmap of grad over
    flattened parameters); impl='loop' is the straightforward reference (autograd per restart,
    a Python loop over parameters). impl='auto' picks func where it pays off (CUDA; several restarts
    of a small model on CPU) and loop otherwise; benchmarks/bench_gradient.py times both. Both are
    differentiable in X and Y and agree to float precision.
    """

    def __init__(self, model: nn.Module, update, *, distance: str = "l2", impl: str = "auto",
                 bn_weight: float = 0.0, device="cpu"):
        if distance not in DISTANCES:
            raise HidebenchError(f"unknown gradient distance {distance!r}; choose from {DISTANCES}")
        if impl not in IMPLS:
            raise HidebenchError(f"unknown implementation {impl!r}; choose from {IMPLS}")
        self.model = attacker_model(model, update.bn_mode, device)
        self.params = {n: p.detach() for n, p in self.model.named_parameters()}
        if len(update.gradient) != len(self.params):
            raise HidebenchError(f"shared update has {len(update.gradient)} tensors, the model {len(self.params)} parameters")
        for (n, p), g in zip(self.params.items(), update.gradient):
            if p.shape != g.shape:
                raise HidebenchError(f"shared gradient for {n} has shape {tuple(g.shape)}, parameter {tuple(p.shape)}")
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.target = [g.to(device).detach() for g in update.gradient]
        self.target_flat = torch.cat([g.flatten() for g in self.target])
        self.target_norm = self.target_flat.norm()
        self.steps, self.lr = update.local_steps, update.local_lr
        self.distance, self.impl = distance, impl
        bn_stats = update.bn_stats or []
        self.bn_weight = float(bn_weight) if bn_stats else 0.0
        self.bn_target = [(m.to(device), v.to(device)) for m, v in bn_stats]
        self.evaluations = 0

    # ---- torch.func path
    def _dummy_grad(self, x, y):
        names = list(self.params)

        def loss_fn(p):
            return soft_cross_entropy(functional_call(self.model, (p, self.buffers), (x,)), y)

        if self.steps == 1:
            g = grad(loss_fn)(self.params)
            return [g[n] for n in names]
        cur = dict(self.params)
        for _ in range(self.steps):
            g = grad(loss_fn)(cur)
            cur = {n: cur[n] - self.lr * g[n] for n in names}
        return [(self.params[n] - cur[n]) / (self.lr * self.steps) for n in names]

    def _dist(self, dg):
        """Distance of a dummy gradient (list) to the target: one flattened vector, or per layer."""
        if self.distance == "cosine_layerwise":
            d = [0.5 * ((a / (a.norm() + 1e-12) - b / (b.norm() + 1e-12)) ** 2).sum() for a, b in zip(dg, self.target)]
            return torch.stack(d).mean()
        d, t = torch.cat([a.flatten() for a in dg]), self.target_flat
        if self.distance == "l2":
            return ((d - t) ** 2).sum()
        # 1 - cos(d, t) written as 0.5 |d/|d| - t/|t||^2: the same value, without cancellation in float32
        return 0.5 * ((d / (d.norm() + 1e-12) - t / (self.target_norm + 1e-12)) ** 2).sum()

    def _bn_loss(self, x):
        stats = []

        def hook(_m, inp, _out):
            h = inp[0]
            mu = h.mean(dim=(0, 2, 3))
            stats.append((mu, ((h - mu[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))))

        hooks = [m.register_forward_hook(hook) for m in self.model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            functional_call(self.model, (self.params, self.buffers), (x,))
        finally:
            for h in hooks:
                h.remove()
        return sum((mu - tm).norm() + (var - tv).norm() for (mu, var), (tm, tv) in zip(stats, self.bn_target))

    # vmap pays off on CUDA, and on CPU for several restarts of small models (LeNet, ConvNet);
    # for ResNet-18 on CPU the plain loop is faster (benchmarks/bench_gradient.py, part a).
    FUNC_CPU_MAX_PARAMS = 2_000_000

    def _func_pays_off(self, restarts: int, cuda: bool) -> bool:
        n = sum(p.numel() for p in self.params.values())
        return cuda or (restarts > 1 and n <= self.FUNC_CPU_MAX_PARAMS)

    def loss(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        if self.impl == "func" or (self.impl == "auto" and self._func_pays_off(len(X), X.is_cuda)):
            def trial(x, y):
                out = self._dist(self._dummy_grad(x, y))
                if self.bn_weight:
                    out = out + self.bn_weight * self._bn_loss(x)
                return out

            return vmap(trial)(X, Y)
        with torch.enable_grad():      # the dummy gradient needs autograd even when scoring under no_grad
            return torch.stack([self._loop_one(X[r], Y[r]) for r in range(len(X))])

    # ---- straightforward reference path
    def _loop_one(self, x, y):
        params = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        dg = local_update(self.model, params, self.buffers, x, y, self.steps, self.lr, create_graph=True)
        if self.distance == "l2":
            out = 0.0
            for a, b in zip(dg, self.target):
                out = out + ((a - b) ** 2).sum()
        elif self.distance == "cosine_layerwise":
            out = 0.0
            for a, b in zip(dg, self.target):
                out = out + 0.5 * ((a / ((a * a).sum().sqrt() + 1e-12) - b / ((b * b).sum().sqrt() + 1e-12)) ** 2).sum()
            out = out / len(dg)
        else:
            na, nb = 0.0, 0.0
            for a, b in zip(dg, self.target):
                na = na + (a * a).sum()
                nb = nb + (b * b).sum()
            na, nb = na.sqrt() + 1e-12, nb.sqrt() + 1e-12
            out = 0.0
            for a, b in zip(dg, self.target):
                out = out + 0.5 * ((a / na - b / nb) ** 2).sum()
        if self.bn_weight:
            out = out + self.bn_weight * self._bn_loss(x)
        return out


def _last_layer_grads(model: nn.Module, update, n_classes: int):
    """(weight gradient C x F, bias gradient C or None) of the classification layer."""
    names = [n for n, _ in model.named_parameters()]
    grads = dict(zip(names, update.gradient))
    for n in reversed(names):
        g = grads[n]
        if g.ndim == 2 and g.shape[0] == n_classes:
            b = grads.get(n[: -len("weight")] + "bias") if n.endswith("weight") else None
            return g, b
    raise HidebenchError(f"no classification layer with {n_classes} outputs found in the model")


def largest_remainder(p: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to total, proportional to p (Hamilton's method)."""
    p = np.clip(np.asarray(p, np.float64), 0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
    raw = p * total
    c = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - c))[: total - c.sum()]:
        c[i] += 1
    return c


def recover_labels(model: nn.Module, update, n_classes: int, batch_size: int, *, soft: bool = False,
                   device="cpu", seed: int = 0, n_probe: int = 16,
                   image_size: int = 32) -> tuple[np.ndarray, str]:
    """Labels from the shared gradient (B x n_classes probabilities) and the method's name.

    Batch of one, hard labels: iDLG (Zhao et al. 2020): with cross-entropy the bias gradient is
    p - y, negative exactly at the true class (row sums of the weight gradient if no bias,
    features being non-negative after sigmoid/ReLU). Otherwise: the batch's mean label is
    mean(p) - bias gradient, with mean(p) estimated from the model's predictions on random
    inputs; hard labels are counts by largest remainder, soft labels that mean for every image.
    """
    gw, gb = _last_layer_grads(model, update, n_classes)
    signal = (gb if gb is not None else gw.sum(1)).detach().cpu().double().numpy()
    if batch_size == 1 and not soft:
        return np.eye(n_classes, dtype=np.float32)[[int(np.argmin(signal))]], "idlg"
    if gb is None:
        mean_label = np.clip(-signal, 0, None)
    else:
        m = attacker_model(model, update.bn_mode, device)
        g = torch.Generator(device="cpu").manual_seed(seed)
        probe = (torch.rand((n_probe, 3, image_size, image_size), generator=g) * 2 - 1).to(device)
        with torch.no_grad():
            p_bar = F.softmax(m(probe), -1).mean(0).double().cpu().numpy()
        mean_label = np.clip(p_bar - signal, 0, None)
    if mean_label.sum() <= 0:
        mean_label = np.ones(n_classes)
    mean_label = mean_label / mean_label.sum()
    if soft:
        return np.tile(mean_label.astype(np.float32), (batch_size, 1)), "mean-label"
    counts = largest_remainder(mean_label, batch_size)
    return np.eye(n_classes, dtype=np.float32)[np.repeat(np.arange(n_classes), counts)], "label-count"


def resolve_labels(mode: str, update, model, batch_size: int, *, device="cpu", seed: int = 0,
                   image_size: int = 32) -> tuple[np.ndarray | None, str]:
    """(fixed labels B x C, or None when they are optimised, and the method's name) for a label
    mode, from what the AttackerUpdate grants: its labels ('auto' uses them when granted, else
    recovers), and its defense_k (k >= 2: the client mixes, so recovered labels are soft)."""
    n_classes = update.n_classes
    if mode == "auto":
        mode = "known" if update.labels is not None else "recover"
    if mode == "known":
        if update.labels is None:
            raise HidebenchError("label_mode 'known' needs the labels, which the threat model does not grant "
                                 "(knows_labels=False)")
        y = np.asarray(update.labels, np.float32)
        if y.shape != (batch_size, n_classes):
            raise HidebenchError(f"known labels of shape {y.shape}, expected {(batch_size, n_classes)}")
        return y, "known"
    if mode == "recover":
        mixing = update.defense_k is not None and update.defense_k >= 2
        return recover_labels(model, update, n_classes, batch_size, soft=mixing, device=device, seed=seed,
                              image_size=image_size)
    if mode == "optimise":
        return None, "optimised"
    raise HidebenchError(f"unknown label_mode {mode!r}; choose from {LABEL_MODES}")
