"""Two attack families, one registry.

* `ReleaseAttack.run(view, oracle, ctx) -> ReleaseResult`: a public release (encryptions and
  mixed labels) -> one decryption per encryption and, optionally, the recovered private set.
  Its threat model is a `ReleaseThreatModel` (aux data, public pool, oracle parts).
* `UpdateAttack.run(update, model, ctx) -> UpdateResult`: a federated client's shared update
  and the shared model -> the client's (encrypted) batch. Its threat model is an
  `UpdateThreatModel`, which builds the `AttackerUpdate` the attack sees.

A release attack's `modality` says which releases it reads: 'image' (InstaHide and Mixup,
hidebench.types.PublicView) or 'text' (TextHide, hidebench.text.types.TextView; the
`TextReleaseAttack` base, whose threat model is a hidebench.text.threat.TextThreatModel).

Each attack is one class with one `run`, a `Config` (a hidebench.config.Config dataclass that
holds every default: front ends never change them) and a `name`; `@register` adds it to
ATTACKS, and the registry-wide contract test covers it from then on (ART's one base class per
family, torchattacks' one registry and one test matrix).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hidebench.config import Config
from hidebench.context import ExecutionContext
from hidebench.text.threat import TextThreatModel
from hidebench.threat import AttackerUpdate, Oracle, ReleaseThreatModel, UpdateThreatModel
from hidebench.types import HidebenchError, PublicView, SecretKey


@dataclass
class ReleaseResult:
    """decryption: E x 32 x 32 x 3 in [-1, 1] (one image per encryption, challenge format), or
    for a text release E x d (one representation per encryption); recovered: optional set of
    recovered private images (representations); texts: a text attack's recovered sentences, one
    per recovered representation; stats/timings: attack-side measurements for the record;
    artifacts: arrays for `evaluate` (not recorded)."""

    decryption: np.ndarray
    recovered: np.ndarray | None = None
    texts: list[str] | None = None
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)


@dataclass
class UpdateResult:
    """recovered: B x 32 x 32 x 3 in [-1, 1]; labels: B x C, the attacker's label estimate."""

    recovered: np.ndarray
    labels: np.ndarray
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


@dataclass
class NoConfig(Config):
    """The config of an attack without options."""


class _AttackBase:
    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    Threat: ClassVar[type] = ReleaseThreatModel

    def __init__(self, config: dict | Config | None = None, threat=None):
        self.config = config if isinstance(config, self.Config) else self.Config.from_dict(config,
                                                                                           where=self.name or None)
        threat = self.Threat() if threat is None else threat
        if isinstance(threat, dict):
            threat = self.Threat.from_dict(threat)
        if not isinstance(threat, self.Threat):
            raise HidebenchError(f"{self.name} takes a {self.Threat.__name__}, got {type(threat).__name__}")
        self.threat = threat

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class ReleaseAttack(_AttackBase):
    """Base of attacks on a public release. `uses_oracles`: the oracle parts the attack can
    consume (an ungranted or unusable part is refused before the run)."""

    family = "release"
    modality: ClassVar[str] = "image"
    Threat = ReleaseThreatModel
    uses_oracles: ClassVar[tuple[str, ...]] = ()
    uses_models: ClassVar[bool] = False      # trains models into the model cache (ctx.model_dir)

    def __init__(self, config=None, threat=None):
        super().__init__(config, threat)
        unusable = [o for o in self.threat.oracles if o not in self.uses_oracles]
        if unusable:
            raise HidebenchError(f"attack {self.name} cannot use oracle(s) {unusable}; "
                                 f"it uses {list(self.uses_oracles) or 'none'}")

    def run(self, view: PublicView, oracle: Oracle, ctx: ExecutionContext) -> ReleaseResult:
        raise NotImplementedError

    def evaluate(self, result: ReleaseResult, key: SecretKey) -> dict:
        """Stage metrics computed with the key after the attack ran (default: none)."""
        return {}


class TextReleaseAttack(ReleaseAttack):
    """Base of attacks on a TextHide release: run(view: TextView, oracle: TextOracle, ctx)."""

    modality = "text"
    Threat = TextThreatModel


class UpdateAttack(_AttackBase):
    """Base of attacks on a federated update."""

    family = "update"
    Threat = UpdateThreatModel

    def run(self, update: AttackerUpdate, model, ctx: ExecutionContext) -> UpdateResult:
        raise NotImplementedError


ATTACKS: dict[str, type[_AttackBase]] = {}


def register(cls):
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.family not in ("release", "update"):
        raise ValueError(f"{cls.__name__} is neither a ReleaseAttack nor an UpdateAttack")
    ATTACKS[cls.name] = cls
    return cls


def get_attack(name: str):
    import hidebench.attacks  # noqa: F401  (registers the built-in attacks)

    if name not in ATTACKS:
        raise HidebenchError(f"unknown attack {name!r}; registered: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]
