"""Base class of the gradient-matching attacks (registered in attacks.base.ATTACKS).

Unlike the release attacks, these see a federated update (hidebench.federated.SharedUpdate) and
the shared model, not a PublicView; `run` therefore takes those. The threat model is a
GradientThreatModel (what the attacker knows: labels, batch size, BN statistics, the defense's k).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from attacks.base import Attack
from attacks.gradient.common import (IMPLS, LABEL_MODES, GradientAttackResult, GradientMatcher, GradientThreatModel,
                                     resolve_batch_size, resolve_labels)
from hidebench.federated import SharedUpdate, to_numpy_images
from hidebench.types import HidebenchError


class GradientAttack(Attack):
    """Subclasses set name/Config and implement _optimise(matcher, shape, n_classes, y_fixed, device, progress)
    returning (images B x 3 x H x W, labels B x C, final loss, iterations)."""

    distance = "l2"

    def __init__(self, config=None, threat: GradientThreatModel | None = None):
        super().__init__(config, threat or GradientThreatModel())
        if not isinstance(self.threat, GradientThreatModel):
            raise HidebenchError(f"{self.name} needs a GradientThreatModel, got {type(self.threat).__name__}")
        c = self.config
        if c.impl not in IMPLS:
            raise HidebenchError(f"{self.name}: unknown impl {c.impl!r}; choose from {IMPLS}")
        if c.label_mode not in LABEL_MODES:
            raise HidebenchError(f"{self.name}: unknown label_mode {c.label_mode!r}; choose from {LABEL_MODES}")
        for name in ("iterations", "restarts"):
            if int(getattr(c, name)) != getattr(c, name) or getattr(c, name) < 1:
                raise HidebenchError(f"{self.name}: {name} must be a positive integer, got {getattr(c, name)}")

    def run(self, update: SharedUpdate, model: torch.nn.Module, *, n_classes: int, true_labels=None, seed: int = 0,
            device="cpu", progress: bool = True, image_size: int = 32) -> GradientAttackResult:
        """Reconstruct the client's batch from its shared update. true_labels (B x C) is used only
        when the threat model grants the labels."""
        c = self.config
        t0 = time.perf_counter()
        B = resolve_batch_size(self.threat, update)
        y_fixed, label_method = resolve_labels(c.label_mode, self.threat, model, update, n_classes, B,
                                               true_labels if self.threat.knows_labels else None, device, seed,
                                               image_size)
        matcher = GradientMatcher(model, update, distance=getattr(c, "distance", self.distance), impl=c.impl,
                                  device=device, bn_weight=c.bn_weight if self.threat.knows_bn_stats else 0.0)
        t1 = time.perf_counter()
        torch.manual_seed(seed)
        x, y, best_loss, iters = self._optimise(matcher, (B, 3, image_size, image_size), n_classes, y_fixed, device,
                                                 progress)
        t2 = time.perf_counter()
        rec = np.clip(to_numpy_images(x), -1, 1)
        labels = y.detach().cpu().float().numpy() if torch.is_tensor(y) else np.asarray(y, np.float32)
        stats = {"label_method": label_method, "batch_size_assumed": B, "final_gradient_loss": best_loss,
                 "iterations": iters, "gradient_evaluations": matcher.evaluations, "distance": matcher.distance,
                 "bn_prior": bool(matcher.bn_weight)}
        return GradientAttackResult(rec.astype(np.float32), labels, stats,
                                    {"setup_s": t1 - t0, "optimise_s": t2 - t1, "per_iteration_s": (t2 - t1) / max(iters, 1)})

    def _optimise(self, matcher, shape, n_classes, y_fixed, device, progress):
        raise NotImplementedError
