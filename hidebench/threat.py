"""Threat models: what an attacker is granted, and the input each one builds for the attack.

Following breaching (Geiping et al.), the threat model *constructs* the attacker's input: what
is not granted never reaches the attack object, so no attack can misuse it.

* `ReleaseThreatModel` (attacks on a public release): auxiliary data, the public pool's
  description, and, for ablations only, named parts of the key handed out by an `Oracle`.
* `UpdateThreatModel` (attacks on a federated update): labels, batch size, BatchNorm
  statistics and the defense's k, each only when granted; `attacker_update` strips the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hidebench.config import Config, check_bool, check_int
from hidebench.types import HidebenchError, SecretKey

# The recipe's suggested auxiliary data (resolved by the harness; recorded as resolved).
FROM_RECIPE = "recipe"

ORACLE_PARTS = {
    "pairs": "which private images each encryption mixes (E x slots arbitrary ids), used as the similarity",
    "assignment": "the same ids plus each id's class: replaces the whole grouping",
    "lambdas": "each encryption's private coefficients, keyed by the same ids",
}


@dataclass(frozen=True)
class Membership:
    """Oracle 'pairs'/'assignment': ids[e, j] is the (arbitrary) id of the j-th private image
    of encryption e; classes[i] the class of id i (only with 'assignment')."""

    ids: np.ndarray
    n_private: int
    classes: np.ndarray | None = None


@dataclass(frozen=True)
class Coefficients:
    """Oracle 'lambdas': values[e, j] is the coefficient of private image ids[e, j]."""

    values: np.ndarray
    ids: np.ndarray


class Oracle:
    """Hands out only the parts of the key a threat model grants, each as its own small type."""

    def __init__(self, key: SecretKey | None, granted: tuple[str, ...] = ()):
        granted = tuple(granted)
        bad = [g for g in granted if g not in ORACLE_PARTS]
        if bad:
            raise HidebenchError(f"unknown oracle(s) {bad}; choose from {sorted(ORACLE_PARTS)}")
        if granted and key is None:
            raise HidebenchError(f"oracle(s) {list(granted)} requested, but the challenge has no key/")
        self._key, self.granted = key, granted

    def __contains__(self, part: str) -> bool:
        return part in self.granted

    def get(self, part: str, n_encryptions: int | None = None):
        if part not in self.granted:
            raise PermissionError(f"oracle {part!r} was not granted by the threat model")
        key = self._key
        if n_encryptions is not None and len(key.selection) != n_encryptions:
            raise HidebenchError(f"the oracle's key covers {len(key.selection)} encryptions, the release {n_encryptions}")
        ids = key.private_of().copy()
        missing = {"assignment": key.private_labels, "lambdas": key.lambdas}.get(part, ids)
        if missing is None:
            raise HidebenchError(f"oracle {part!r} needs the key's "
                                 f"{'private labels' if part == 'assignment' else 'coefficients'}, which this key lacks")
        if part == "pairs":
            return Membership(ids, len(key.private))
        if part == "assignment":
            return Membership(ids, len(key.private), key.private_labels.copy())
        return Coefficients(key.lambdas[:, : key.n_private_slots].copy(), ids)


@dataclass(frozen=True)
class ReleaseThreatModel(Config):
    """What a release attacker is granted beyond the public files.

    aux: spec of auxiliary images from the private distribution (e.g. 'cifar10:train'); None:
    no auxiliary data; 'recipe': the release recipe's suggestion (resolved before the attack).
    public_pool: may draw its own patches from the public pool the release's recipe names
    (source and SIFT filter, never the release's patches). pool: that pool's settings, filled
    from the release by `resolve`. oracles: parts of the key handed over (ORACLE_PARTS).
    """

    section = "threat"
    aux: str | None = FROM_RECIPE
    public_pool: bool = True
    pool: dict | None = None
    oracles: tuple[str, ...] = ()

    def validate(self):
        object.__setattr__(self, "oracles", tuple(dict.fromkeys(self.oracles)))
        bad = [o for o in self.oracles if o not in ORACLE_PARTS]
        if bad:
            raise HidebenchError(f"unknown oracle(s) {bad}; choose from {sorted(ORACLE_PARTS)}")
        check_bool(self.public_pool, "threat.public_pool")
        if self.aux is not None and not isinstance(self.aux, str):
            raise HidebenchError(f"threat.aux must be a data source spec or None, got {self.aux!r}")

    def resolve(self, manifest: dict) -> ReleaseThreatModel:
        """A copy with the recipe's aux (if asked for) and the pool's settings (if granted)."""
        recipe = manifest.get("recipe") or {}
        aux = (recipe.get("attacker") or {}).get("aux") if self.aux == FROM_RECIPE else self.aux
        pool = (dict(recipe["pool"]) if recipe.get("pool") else None) if self.public_pool else None
        return replace(self, aux=aux, pool=pool if self.pool is None else self.pool)


@dataclass
class AttackerUpdate:
    """What an update attacker sees: the shared update and, where granted, the extras.

    gradient: list of tensors in model.parameters() order; labels (B x C), batch_size and
    bn_stats are None unless the threat model grants them."""

    gradient: list
    update: str
    local_steps: int
    local_lr: float
    bn_mode: str
    n_classes: int
    labels: Any = None
    batch_size: int | None = None
    bn_stats: list | None = None
    defense_k: int | None = None


@dataclass(frozen=True)
class UpdateThreatModel(Config):
    """What a federated-update attacker knows besides the update and the model weights.

    knows_labels: the client's (soft) labels. knows_batch_size: B (else it assumes
    assumed_batch_size). knows_bn_stats: the BatchNorm statistics of the client's batch (a
    prior, Yin et al. 2021). knows_k: the defense's k (>= 2 means mixed, soft labels)."""

    section = "threat"
    knows_labels: bool = False
    knows_batch_size: bool = True
    knows_bn_stats: bool = False
    knows_k: bool = True
    assumed_batch_size: int = 1

    def validate(self):
        for name in ("knows_labels", "knows_batch_size", "knows_bn_stats", "knows_k"):
            check_bool(getattr(self, name), f"threat.{name}")
        check_int(self.assumed_batch_size, "threat.assumed_batch_size", min=1)

    def attacker_update(self, shared, *, n_classes: int, labels=None, defense_k: int | None = None) -> AttackerUpdate:
        """Build the attacker's input from a client's shared update (duck-typed SharedUpdate)."""
        return AttackerUpdate(
            gradient=list(shared.gradient), update=shared.update, local_steps=shared.local_steps,
            local_lr=shared.local_lr, bn_mode=shared.bn_mode, n_classes=n_classes,
            labels=labels if self.knows_labels else None,
            batch_size=shared.n_samples if self.knows_batch_size else None,
            bn_stats=list(shared.bn_stats) if self.knows_bn_stats else None,
            defense_k=defense_k if self.knows_k else None)


__all__ = ["FROM_RECIPE", "ORACLE_PARTS", "AttackerUpdate", "Coefficients", "Membership", "Oracle",
           "ReleaseThreatModel", "UpdateThreatModel"]
