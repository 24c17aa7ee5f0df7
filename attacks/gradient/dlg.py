"""DLG, Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019).

Dummy images and dummy soft labels (softmax of free logits) are optimised jointly with L-BFGS
to minimise the squared L2 distance between their gradient and the shared one. With
label_mode 'recover' the labels are fixed from the gradient instead (iDLG, Zhao et al. 2020).
"""
from __future__ import annotations

from dataclasses import dataclass

from hidebench.attacks.base import register
from hidebench.attacks.gradient.base import GradientAttack, check_common
from hidebench.config import Config, check_choice, check_float, check_int


@dataclass
class DLGConfig(Config):
    """iterations: L-BFGS steps per restart (each up to lbfgs_max_iter gradient evaluations);
    lr, history_size, line_search: L-BFGS settings (line_search None: the original DLG's plain
    steps of length lr). restarts: random starts, the best gradient distance is kept.
    label_mode: 'optimise' (DLG: soft labels optimised with the images), 'recover' (iDLG /
    label counts), 'known' (needs knows_labels), 'auto' (known if granted, else recover).
    impl: gradient-distance implementation (GradientMatcher). bn_weight: weight of the
    BatchNorm-statistics prior, used only when the threat model grants the statistics.
    tol: a restart stops once the gradient distance is below it. image_size: side of the
    reconstructed images (hidebench's are 32)."""

    section = "dlg"
    iterations: int = 300
    lr: float = 1.0
    lbfgs_max_iter: int = 20
    history_size: int = 100
    line_search: str | None = "strong_wolfe"
    restarts: int = 1
    label_mode: str = "optimise"
    impl: str = "auto"
    bn_weight: float = 1e-2
    tol: float = 1e-10
    image_size: int = 32

    def validate(self):
        check_common(self)
        s = self.section
        check_float(self.lr, f"{s}.lr", min=0, min_open=True)
        self.lbfgs_max_iter = check_int(self.lbfgs_max_iter, f"{s}.lbfgs_max_iter", min=1)
        self.history_size = check_int(self.history_size, f"{s}.history_size", min=1)
        check_choice(self.line_search, f"{s}.line_search", ("strong_wolfe", None))
        check_float(self.tol, f"{s}.tol", min=0)


@register
class DLG(GradientAttack):
    """Zhu et al. 2019 (DLG): L2 gradient matching, L-BFGS, jointly optimised soft labels."""

    name = "dlg"
    Config = DLGConfig
    distance = "l2"

    def plan(self, model) -> dict:
        return {"optimizer": "lbfgs", "max_iterations": self.config.iterations}

    def _optimise(self, matcher, shape, n_classes, y_fixed, device, progress, plan):
        import torch

        from hidebench.progress import bar as progress_bar

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

            def labels(fixed=fixed, logits=logits):
                return fixed if fixed is not None else torch.softmax(logits, -1)

            def closure(opt=opt, x=x, labels=labels):
                opt.zero_grad()
                loss = matcher.loss(x, labels()).sum()
                loss.backward()
                return loss

            bar = progress_bar(range(plan["max_iterations"]), enabled=progress, desc=f"dlg restart {r + 1}/{c.restarts}",
                               leave=False)
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
