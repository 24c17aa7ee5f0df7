"""One base class, one entry point, one registry for every attack.

An attack sees a PublicView and what its ThreatModel grants. The SecretKey reaches it only
through `oracle`, and only for the parts an experiment names in ThreatModel.oracles; the run
record says which were on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hidebench.types import HidebenchError, PublicView, SecretKey

ORACLES = ("pairs", "assignment", "lambdas", "signs")


@dataclass
class ThreatModel:
    """What the attacker is granted beyond the public release.

    aux: spec of auxiliary images from the private distribution (e.g. 'cifar10:train').
    public_pool: whether the attacker may draw from the public pool the defense used (the
    pool's source and SIFT filter, as the release's recipe states them; never the patches).
    pool: that pool's PoolConfig fields; the harness fills them from the challenge manifest.
    oracles: parts of the secret key handed over for ablations (see ORACLES).
    """

    aux: str | None = None
    public_pool: bool = False
    pool: dict | None = None
    knows_scheme: bool = True
    oracles: tuple[str, ...] = ()

    def __post_init__(self):
        self.oracles = tuple(self.oracles)
        bad = [o for o in self.oracles if o not in ORACLES]
        if bad:
            raise HidebenchError(f"unknown oracle(s) {bad}; choose from {ORACLES}")


class Oracle:
    """Hands out the parts of the key a ThreatModel names, refusing the rest."""

    def __init__(self, key: SecretKey | None, granted: tuple[str, ...]):
        if granted and key is None:
            raise HidebenchError(f"oracle(s) {list(granted)} requested, but the challenge has no key/")
        self._key, self.granted = key, tuple(granted)

    def __contains__(self, part: str) -> bool:
        return part in self.granted

    def get(self, part: str) -> SecretKey:
        if part not in self.granted:
            raise PermissionError(f"oracle {part!r} was not granted by the threat model")
        return self._key


@dataclass
class AttackResult:
    """decryption: E x 32 x 32 x 3 in [-1, 1] (one image per encryption, challenge format);
    recovered: optional set of recovered private images; stats: attack-side measurements."""

    decryption: np.ndarray
    recovered: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def validate_config(cls, values: dict | None):
    """Build a config dataclass from a dict, rejecting unknown keys by name."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HidebenchError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**values)


class Attack:
    """Base class. Subclasses set `name`, `Config` (a dataclass) and implement `run`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)

    def __init__(self, config=None, threat: ThreatModel | None = None):
        self.config = config if isinstance(config, self.Config) else validate_config(self.Config, config)
        self.threat = threat or ThreatModel()

    def run(self, view: PublicView, *, oracle: Oracle | None = None, cache_dir: Path | None = None,
            progress: bool = True) -> AttackResult:
        raise NotImplementedError

    def evaluate(self, result: AttackResult, key: SecretKey) -> dict:
        """Stage metrics computed with the key after the attack ran (default: none)."""
        return {}


ATTACKS: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    ATTACKS[cls.name] = cls
    return cls


def get_attack(name: str) -> type[Attack]:
    import attacks  # noqa: F401  (registers the built-in attacks)

    if name not in ATTACKS:
        raise HidebenchError(f"unknown attack {name!r}; registered: {sorted(ATTACKS)}")
    return ATTACKS[name]


def config_dict(config: Any) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
