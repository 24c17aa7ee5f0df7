"""DLG, Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019).

Dummy images and dummy soft labels (softmax of free logits) are optimised jointly with L-BFGS
to minimise the squared L2 distance between their gradient and the shared one. With
label_mode 'recover' (iDLG, Zhao et al. 2020) the labels are fixed from the gradient instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from attacks.base import register
from attacks.gradient.base import GradientAttack


@dataclass
class DLGConfig:
    iterations: int = 300        # L-BFGS steps (each up to lbfgs_max_iter gradient evaluations)
    lr: float = 1.0
    lbfgs_max_iter: int = 20
    history_size: int = 100
    line_search: str | None = "strong_wolfe"   # None: the original DLG (plain lr=1 steps)
    restarts: int = 1
    label_mode: str = "optimise"   # optimise (DLG) | recover (iDLG / label counts) | known | auto
    impl: str = "auto"        # auto | func (torch.func, vmap over restarts) | loop
    bn_weight: float = 1e-2
    tol: float = 1e-10            # stop a restart once the gradient distance is below this


@register
class DLG(GradientAttack):
    """Zhu et al. 2019 (DLG): L2 gradient matching, L-BFGS, jointly optimised soft labels."""

    name = "dlg"
    Config = DLGConfig
    distance = "l2"

    def _optimise(self, matcher, shape, n_classes, y_fixed, device, progress):
        c = self.config
        best = (float("inf"), None, None)
        total_iters = 0
        for r in range(c.restarts):
            x = torch.randn((1,) + tuple(shape), device=device).requires_grad_(True)
            logits = torch.randn((1, shape[0], n_classes), device=device).requires_grad_(True)
            fixed = None if y_fixed is None else torch.as_tensor(y_fixed, device=device)[None]
            params = [x] if fixed is not None else [x, logits]
            opt = torch.optim.LBFGS(params, lr=c.lr, max_iter=c.lbfgs_max_iter, history_size=c.history_size,
                                    line_search_fn=c.line_search)

            def labels():
                return fixed if fixed is not None else torch.softmax(logits, -1)

            def closure():
                opt.zero_grad()
                loss = matcher.loss(x, labels()).sum()
                loss.backward()
                return loss

            bar = tqdm(range(c.iterations), desc=f"dlg restart {r + 1}/{c.restarts}", disable=not progress, leave=False)
            loss = float("nan")
            for it in bar:
                loss = float(opt.step(closure).detach())
                total_iters += 1
                if it % 10 == 0:
                    bar.set_postfix(grad_dist=f"{loss:.3g}")
                if not torch.isfinite(x).all() or loss != loss or loss < c.tol:
                    break
            with torch.no_grad():
                final = float(matcher.loss(x, labels()).sum()) if torch.isfinite(x).all() else float("inf")
            if final < best[0] or best[1] is None:
                best = (final, x.detach()[0].clone(), labels().detach()[0].clone())
        x_best = torch.nan_to_num(best[1], nan=0.0)
        return x_best, best[2], best[0], total_iters
