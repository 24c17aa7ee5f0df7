"""The `identity` baseline: decryption = |encryption| rescaled to [-1, 1] per image.

Every attack must beat it. It uses nothing but the public encryptions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import Attack, AttackResult, register


@dataclass
class IdentityConfig:
    pass


def rescaled_abs(encryptions: np.ndarray) -> np.ndarray:
    """|e| min-max rescaled per image to [-1, 1]."""
    a = np.abs(encryptions.astype(np.float32))
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    hi = a.max(axis=(1, 2, 3), keepdims=True)
    return (2 * (a - lo) / np.maximum(hi - lo, 1e-8) - 1).astype(np.float32)


@register
class Identity(Attack):
    """Baseline: decryption = |encryption| rescaled per image; the floor every attack must beat."""

    name = "identity"
    Config = IdentityConfig

    def run(self, view, *, oracle=None, cache_dir=None, progress=True):
        return AttackResult(decryption=rescaled_abs(view.encryptions))
