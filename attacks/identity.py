"""The `identity` baseline: the floor every release attack must beat.

For InstaHide the decryption is |encryption| rescaled to [-1, 1] per image (the mask makes the
sign carry nothing); for Mixup, the encryption itself, which is already a blend of the private
images. It uses nothing but the public encryptions.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register


def rescaled_abs(encryptions: np.ndarray) -> np.ndarray:
    """|e| min-max rescaled per image to [-1, 1]."""
    a = np.abs(encryptions.astype(np.float32))
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    hi = a.max(axis=(1, 2, 3), keepdims=True)
    return (2 * (a - lo) / np.maximum(hi - lo, 1e-8) - 1).astype(np.float32)


def baseline_decryption(view) -> np.ndarray:
    return view.encryptions.astype(np.float32) if view.scheme == "mixup" else rescaled_abs(view.encryptions)


@register
class Identity(ReleaseAttack):
    """Baseline: InstaHide |encryption| rescaled per image, Mixup the encryption itself."""

    name = "identity"

    def run(self, view, oracle, ctx):
        return ReleaseResult(decryption=baseline_decryption(view))
