"""Inverting Gradients (Geiping, Bauermeister, Droege, Moeller, NeurIPS 2020).

Minimise 1 - cos(grad(x'), shared gradient) + tv * TV(x') under a box constraint (x' clamped to
[-1, 1]) from several random restarts, keeping the best by its objective. The paper's optimiser
is Adam on signed gradients with step decay by 0.1 at 3/8, 5/8 and 7/8 of the iterations; its
restarts run all at once here (batched). The authors' code (inversefed) also offers L-BFGS
(optimizer='lbfgs', restarts run one after another), which converges far faster on the
ill-conditioned sigmoid LeNet. Labels are recovered analytically (iDLG / label counts) unless
the threat model grants them; label_mode 'optimise' also optimises soft labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from attacks.base import register
from attacks.gradient.base import GradientAttack
from attacks.gradient.common import total_variation
from hidebench.types import HidebenchError

OPTIMIZERS = ("adam", "lbfgs")


@dataclass
class InvertingConfig:
    iterations: int = 2000        # Adam steps, or L-BFGS steps (each up to lbfgs_max_iter evaluations)
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 1
    signed: bool = True
    boxed: bool = True
    optimizer: str = "adam"
    lbfgs_max_iter: int = 20
    label_mode: str = "auto"      # auto (known if granted, else recover) | recover | known | optimise
    impl: str = "auto"        # auto | func (torch.func, vmap over restarts) | loop
    bn_weight: float = 1e-2
    distance: str = "cosine"      # cosine over all parameters (the paper) | cosine_layerwise (mean per tensor)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise HidebenchError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.tv < 0 or self.lr <= 0:
            raise HidebenchError(f"tv must be >= 0 and lr > 0, got tv={self.tv}, lr={self.lr}")


@register
class InvertingGradients(GradientAttack):
    """Geiping et al. 2020: cosine gradient matching, TV prior, box constraint, restarts."""

    name = "inverting_gradients"
    Config = InvertingConfig

    def _optimise(self, matcher, shape, n_classes, y_fixed, device, progress):
        c = self.config
        if c.optimizer == "adam":
            return self._adam(matcher, c.restarts, shape, n_classes, y_fixed, device, progress)
        best, total = None, 0
        for _ in range(c.restarts):
            out = self._lbfgs(matcher, shape, n_classes, y_fixed, device, progress)
            total += out[3]
            if best is None or out[2] < best[2]:
                best = out
        return best[0], best[1], best[2], total

    def _setup(self, R, shape, n_classes, y_fixed, device):
        x = torch.randn((R,) + tuple(shape), device=device).clamp_(-1, 1).requires_grad_(True)
        logits = torch.randn((R, shape[0], n_classes), device=device).requires_grad_(True)
        fixed = None if y_fixed is None else torch.as_tensor(y_fixed, device=device)[None].expand(R, -1, -1)

        def labels():
            return fixed if fixed is not None else torch.softmax(logits, -1)

        return x, ([x] if fixed is not None else [x, logits]), labels

    def _objective(self, matcher, x, labels):
        return matcher.loss(x, labels()) + self.config.tv * total_variation(x).mean(-1)

    def _adam(self, matcher, R, shape, n_classes, y_fixed, device, progress):
        c = self.config
        x, params, labels = self._setup(R, shape, n_classes, y_fixed, device)
        opt = torch.optim.Adam(params, lr=c.lr)
        milestones = [int(c.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        bar = tqdm(range(c.iterations), desc=f"inverting gradients ({R} restart(s))", disable=not progress, leave=False)
        for it in bar:
            opt.zero_grad()
            loss = self._objective(matcher, x, labels)
            loss.sum().backward()
            if c.signed:
                for p in params:
                    p.grad.sign_()
            opt.step()
            sched.step()
            if c.boxed:
                with torch.no_grad():
                    x.clamp_(-1, 1)
            if it % 50 == 0:
                bar.set_postfix(objective=f"{float(loss.detach().min()):.4g}")
        with torch.no_grad():
            final = self._objective(matcher, x, labels)
        best = int(torch.nan_to_num(final, nan=float("inf")).argmin())
        return x.detach()[best], labels().detach()[best], float(final[best]), c.iterations

    def _lbfgs(self, matcher, shape, n_classes, y_fixed, device, progress):
        c = self.config
        x, params, labels = self._setup(1, shape, n_classes, y_fixed, device)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=c.lbfgs_max_iter, history_size=100,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = self._objective(matcher, x, labels).sum()
            loss.backward()
            return loss

        bar = tqdm(range(c.iterations), desc="inverting gradients (L-BFGS)", disable=not progress, leave=False)
        it, prev = 0, float("inf")
        for it in bar:
            loss = float(opt.step(closure).detach())
            if c.boxed:
                with torch.no_grad():
                    x.clamp_(-1, 1)
            if it % 10 == 0:
                bar.set_postfix(objective=f"{loss:.4g}")
            if not torch.isfinite(x).all() or loss != loss or prev == loss:
                break
            prev = loss
        with torch.no_grad():
            final = float(self._objective(matcher, x, labels).sum()) if torch.isfinite(x).all() else float("inf")
        return torch.nan_to_num(x.detach()[0]), labels().detach()[0], final, it + 1
