"""The `aux_mean` baseline: what the attacker's prior alone scores.

For every encryption it outputs the mean of the auxiliary images of the class that carries the
largest coefficient in its label row (the overall aux mean when that class has no aux images).
It looks at no pixel of the release. On releases whose private images resemble each other (the
embedded faces), this constant guess already scores a Max_SSIM far above `identity`, so an
attack's figure means something only above this floor too.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.attacker_data import load_aux
from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register

# Aux images averaged at most (a strided, class-balanced subset).
AUX_MAX = 20000


def class_means(images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes x H x W x C: the mean image of each class (the overall mean for absent ones)."""
    overall = images.mean(0)
    return np.stack([images[labels == c].mean(0) if (labels == c).any() else overall for c in range(n_classes)])


@register
class AuxMean(ReleaseAttack):
    """Baseline: per encryption, the aux mean image of its heaviest labelled class (no pixel of the release)."""

    name = "aux_mean"

    def run(self, view, oracle, ctx):
        aux = load_aux(self.threat.aux, ctx, AUX_MAX, needed_for="the aux_mean baseline")
        means = class_means(aux.images, aux.labels, view.labels.shape[1])
        return ReleaseResult(decryption=means[view.labels.argmax(1)].astype(np.float32),
                             stats={"aux_images": len(aux)})
