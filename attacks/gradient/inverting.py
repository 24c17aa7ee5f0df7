"""Inverting Gradients (Geiping, Bauermeister, Droege, Moeller, NeurIPS 2020).

Minimise 1 - cos(grad(x'), shared gradient) + tv * TV(x') with Adam on signed gradients, step
decay by 0.1 at 3/8, 5/8 and 7/8 of the iterations, a box constraint (x' clamped to [-1, 1])
and several restarts, run all at once (batched over restarts) and the best kept by its
objective. Labels are recovered analytically (iDLG / label counts) unless the threat model
grants them; label_mode 'optimise' also optimises soft labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from attacks.base import register
from attacks.gradient.base import GradientAttack
from attacks.gradient.common import total_variation


@dataclass
class InvertingConfig:
    iterations: int = 2000
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 1
    signed: bool = True
    boxed: bool = True
    label_mode: str = "auto"      # auto (known if granted, else recover) | recover | known | optimise
    impl: str = "func"
    bn_weight: float = 1e-2
    distance: str = "cosine"      # cosine over all parameters (the paper) | cosine_layerwise (mean per tensor)


@register
class InvertingGradients(GradientAttack):
    name = "inverting_gradients"
    Config = InvertingConfig

    def _optimise(self, matcher, B, n_classes, y_fixed, device, progress):
        c = self.config
        R = c.restarts
        x = torch.randn((R, B, 3, 32, 32), device=device).clamp_(-1, 1).requires_grad_(True)
        logits = torch.randn((R, B, n_classes), device=device).requires_grad_(True)
        fixed = None if y_fixed is None else torch.as_tensor(y_fixed, device=device)[None].expand(R, -1, -1)
        params = [x] if fixed is not None else [x, logits]
        opt = torch.optim.Adam(params, lr=c.lr)
        milestones = [int(c.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

        def labels():
            return fixed if fixed is not None else torch.softmax(logits, -1)

        def objective():
            return matcher.loss(x, labels()) + c.tv * total_variation(x).mean(-1)

        bar = tqdm(range(c.iterations), desc=f"inverting gradients ({R} restart(s))", disable=not progress, leave=False)
        for it in bar:
            opt.zero_grad()
            loss = objective()
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
            final = objective()
        best = int(torch.nan_to_num(final, nan=float("inf")).argmin())
        return x.detach()[best], labels().detach()[best], float(final[best]), c.iterations
