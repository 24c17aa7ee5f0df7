"""The threat model of attacks on a TextHide release, and the oracle handing out parts of its key.

The attacker sees the public files and knows the encoder the manifest names: in TextHide's
federated setting every participant holds the shared encoder, and here it is a public pretrained
model. `TextThreatModel` says what else it holds; like hidebench.threat.ReleaseThreatModel it is
resolved against the release's manifest before the attack runs, and what it does not grant never
reaches the attack.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hidebench.config import Config, check_bool
from hidebench.text.types import TextKey
from hidebench.threat import FROM_RECIPE, Membership
from hidebench.types import HidebenchError

TEXT_ORACLE_PARTS = {
    "masks": "the mask pool and the mask of every encryption (isolates the unmixing and the inversion)",
    "assignment": "which private sentences each encryption mixes, as arbitrary ids with their classes",
}


@dataclass(frozen=True)
class MaskOracle:
    """Oracle 'masks': pool (m x d, +-1) and index[e], the mask encryption e carries."""

    pool: np.ndarray
    index: np.ndarray


@dataclass(frozen=True)
class TextThreatModel(Config):
    """candidates: a text source of sentences the attacker holds (hidebench.text.corpus spec): the
    inversion searches them, and every attack estimates the representations' statistics from
    them; 'recipe': the recipe's [attacker] candidates; None: it holds none. public: it may encode
    the public corpus an inter release names (public_source, filled from the manifest by
    `resolve`). oracles: parts of the key handed over for ablations (TEXT_ORACLE_PARTS)."""

    section = "threat"
    candidates: str | None = FROM_RECIPE
    public: bool = True
    public_source: str | None = None
    oracles: tuple[str, ...] = ()

    def validate(self):
        object.__setattr__(self, "oracles", tuple(dict.fromkeys(self.oracles)))
        bad = [o for o in self.oracles if o not in TEXT_ORACLE_PARTS]
        if bad:
            raise HidebenchError(f"unknown oracle(s) {bad}; a text attack takes {sorted(TEXT_ORACLE_PARTS)}")
        check_bool(self.public, "threat.public")
        for name in ("candidates", "public_source"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise HidebenchError(f"threat.{name} must be a text source spec or none, got {v!r}")

    def resolve(self, manifest: dict) -> TextThreatModel:
        """A copy with the recipe's candidates (when asked for) and the public corpus (when granted
        and the release mixes one in)."""
        recipe = manifest.get("recipe") or {}
        cands = (recipe.get("attacker") or {}).get("candidates") if self.candidates == FROM_RECIPE else self.candidates
        public = None
        if self.public and (manifest.get("data") or {}).get("public"):
            public = manifest["data"]["public"].get("source")
        return replace(self, candidates=cands, public_source=public if self.public_source is None else self.public_source)


class TextOracle:
    """Hands out only the parts of a TextHide key a threat model grants."""

    def __init__(self, key: TextKey | None, granted: tuple[str, ...] = ()):
        granted = tuple(granted)
        bad = [g for g in granted if g not in TEXT_ORACLE_PARTS]
        if bad:
            raise HidebenchError(f"unknown oracle(s) {bad}; choose from {sorted(TEXT_ORACLE_PARTS)}")
        if granted and key is None:
            raise HidebenchError(f"oracle(s) {list(granted)} requested, but the release has no key/")
        self._key, self.granted = key, granted

    def __contains__(self, part: str) -> bool:
        return part in self.granted

    def get(self, part: str):
        if part not in self.granted:
            raise PermissionError(f"oracle {part!r} was not granted by the threat model")
        key = self._key
        if part == "masks":
            return MaskOracle(key.mask_pool.copy(), key.mask_index.copy())
        return Membership(key.private_of().copy(), len(key.private), key.private_labels.copy())
