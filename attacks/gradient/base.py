"""The shared `run` of the gradient-matching attacks (registered in hidebench.attacks.base.ATTACKS).

Gradient matching: find dummy inputs x' (and labels y') whose gradient on the shared model
matches the client's shared update (Zhu et al. 2019, "Deep Leakage from Gradients"; Geiping
et al. 2020, "Inverting Gradients"). An attack sees only the `AttackerUpdate` its
UpdateThreatModel builds and the shared model:

* labels: the granted labels (label_mode 'auto' or 'known'), else recovered from the gradient
  (iDLG, Zhao et al. 2020, for one image; label counts for a batch), or optimised jointly with
  the images (DLG). They are soft (a mean label per image) when the granted defense k says the
  client mixes images, hard otherwise.
* batch size: the granted one, else the threat model's assumed_batch_size.
* BatchNorm statistics: a prior on the dummy batch (Yin et al. 2021) only when granted.

This module imports no torch; `run` loads the torch machinery (hidebench.attacks.gradient.matching) itself.
"""
from __future__ import annotations

import time

import numpy as np

from hidebench.attacks.base import UpdateAttack, UpdateResult
from hidebench.attacks.gradient.options import IMPLS, LABEL_MODES
from hidebench.config import check_choice, check_float, check_int
from hidebench.context import ExecutionContext
from hidebench.threat import AttackerUpdate
from hidebench.types import HidebenchError


def check_common(cfg) -> None:
    """Checks of the fields every gradient attack's Config has (called from its validate)."""
    s = cfg.section
    if cfg.iterations is not None:
        cfg.iterations = check_int(cfg.iterations, f"{s}.iterations", min=1)
    cfg.restarts = check_int(cfg.restarts, f"{s}.restarts", min=1)
    check_choice(cfg.label_mode, f"{s}.label_mode", LABEL_MODES)
    check_choice(cfg.impl, f"{s}.impl", IMPLS)
    check_float(cfg.bn_weight, f"{s}.bn_weight", min=0)
    cfg.image_size = check_int(cfg.image_size, f"{s}.image_size", min=4)


class GradientAttack(UpdateAttack):
    """Base of DLG and Inverting Gradients. Subclasses set name/Config, and implement
    `plan(model)` (the resolved optimiser settings, recorded in stats) and
    `_optimise(matcher, shape, n_classes, y_fixed, device, progress, plan)` returning
    (images B x 3 x H x W, labels B x C, final objective, iterations run)."""

    distance = "l2"

    def __init__(self, config=None, threat=None):
        super().__init__(config, threat)
        if self.config.label_mode == "known" and not self.threat.knows_labels:
            raise HidebenchError(f"{self.name}: label_mode 'known' needs a threat model with knows_labels=True")

    def plan(self, model) -> dict:
        """Settings resolved for this model (e.g. the optimiser); recorded in the result's stats."""
        return {}

    def batch_size(self, update: AttackerUpdate) -> int:
        """The batch size the attacker reconstructs: granted, else the threat model's assumption."""
        return update.batch_size if update.batch_size is not None else self.threat.assumed_batch_size

    def run(self, update: AttackerUpdate, model, ctx: ExecutionContext) -> UpdateResult:
        """Reconstruct the client's batch (B x S x S x 3 in [-1, 1], S = config.image_size) and
        its labels from the attacker's view of a shared update."""
        import torch

        from hidebench.attacks.gradient.matching import GradientMatcher, resolve_labels
        from hidebench.defenses.federated import to_numpy_images

        c = self.config
        device = ctx.torch_device()
        t0 = time.perf_counter()
        B = self.batch_size(update)
        y_fixed, label_method = resolve_labels(c.label_mode, update, model, B, device=device, seed=ctx.seed,
                                               image_size=c.image_size)
        matcher = GradientMatcher(model, update, distance=getattr(c, "distance", self.distance), impl=c.impl,
                                  device=device, bn_weight=c.bn_weight if update.bn_stats is not None else 0.0)
        plan = self.plan(matcher.model)
        t1 = time.perf_counter()
        torch.manual_seed(ctx.seed)
        x, y, best_loss, iters = self._optimise(matcher, (B, 3, c.image_size, c.image_size), update.n_classes,
                                                 y_fixed, device, ctx.progress, plan)
        t2 = time.perf_counter()
        rec = np.clip(to_numpy_images(x), -1, 1).astype(np.float32)
        labels = y.detach().cpu().float().numpy() if torch.is_tensor(y) else np.asarray(y, np.float32)
        stats = {"label_method": label_method, "batch_size_assumed": B, "final_gradient_loss": best_loss,
                 "iterations": iters, "gradient_evaluations": matcher.evaluations, "distance": matcher.distance,
                 "bn_prior": bool(matcher.bn_weight), **plan}
        timings = {"setup_s": t1 - t0, "optimise_s": t2 - t1, "per_iteration_s": (t2 - t1) / max(iters, 1)}
        return UpdateResult(rec, labels, stats, timings)

    def _optimise(self, matcher, shape, n_classes, y_fixed, device, progress, plan):
        raise NotImplementedError
