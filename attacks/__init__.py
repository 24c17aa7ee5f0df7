"""Attacks on InstaHide and Mixup, registered by name (see attacks.base.ATTACKS)."""

from attacks.base import ATTACKS, Attack, AttackResult, Oracle, ThreatModel, get_attack, register
from attacks import identity  # noqa: F401  (registers 'identity')

__all__ = ["ATTACKS", "Attack", "AttackResult", "Oracle", "ThreatModel", "get_attack", "register"]
from attacks import gradient  # noqa: F401
from attacks.carlini import attack as _carlini  # noqa: F401
