"""The run record: one versioned JSON file per run, written by every attack of either family
and by every utility (training) run.

Tables, plots and reports are rendered from records and never recompute a figure. A record
names the attack and its family, the config, the threat model and oracles, the seed, the
setting (scheme, mode, k, T, n_priv for a release; defense, k, batch size for an update), every
metric, per-stage timings and peak memory, library versions and the device.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.types import HidebenchError

SCHEMA_VERSION = 1
FAMILIES = ("release", "update", "utility")
SETTING_KEYS = ("scheme", "mode", "k", "T", "n_priv", "n_encryptions", "batch_size")


@dataclass
class RunRecord:
    attack: str
    family: str
    config: dict
    threat_model: dict
    oracles: list
    seed: int
    setting: dict               # SETTING_KEYS (None where they do not apply)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)   # seconds per stage and 'total_s'
    peak_memory_mb: float | None = None
    stats: dict = field(default_factory=dict)     # attack-side measurements
    source: dict = field(default_factory=dict)    # the challenge (release) or client experiment (update)
    context: dict = field(default_factory=dict)   # execution context (device resolved)
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise HidebenchError(f"record family must be one of {FAMILIES}, got {self.family!r}")
        self.setting = {k: self.setting.get(k) for k in SETTING_KEYS} | {
            k: v for k, v in self.setting.items() if k not in SETTING_KEYS}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, path) -> Path:
        from hidebench.challenge_io import write_json

        write_json(Path(path), self.to_dict())
        return Path(path)


def load_record(path) -> RunRecord:
    """Read and check a record.json; one clear error for anything that is not a run record."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HidebenchError(f"{p} is not a run record: not readable JSON ({e})") from e
    if not isinstance(d, dict) or "schema_version" not in d or "attack" not in d:
        raise HidebenchError(f"{p} is not a run record: it has no schema_version/attack (hidebench writes one "
                             "record.json per run folder)")
    if d["schema_version"] != SCHEMA_VERSION:
        raise HidebenchError(f"{p} has record schema {d['schema_version']!r}; this hidebench reads {SCHEMA_VERSION}")
    names = {f.name for f in dataclasses.fields(RunRecord)}
    missing = sorted(n for n in ("attack", "family", "config", "threat_model", "oracles", "seed", "setting")
                     if n not in d)
    if missing:
        raise HidebenchError(f"{p} is missing record field(s) {missing}")
    for name, want in FIELD_TYPES.items():
        v = d.get(name)
        if name in d and (not isinstance(v, want) or (isinstance(v, bool) and name in ("seed", "peak_memory_mb"))):
            raise HidebenchError(f"{p} is not a run record: field {name!r} holds {type(v).__name__} "
                                 f"({str(v)[:40]!r})")
    if not all(isinstance(o, str) for o in d["oracles"]):
        raise HidebenchError(f"{p} is not a run record: 'oracles' must list names")
    return RunRecord(**{k: v for k, v in d.items() if k in names})


def record_row(rec: RunRecord, setting_keys=SETTING_KEYS) -> dict:
    """A record as one table row, for every table of records (a report of run folders, a sweep's
    results): attack, family, oracles, seed, the setting (`setting_keys`, and `epochs` for a
    training run), every scalar metric under its dotted path (challenge.Max_SSIM), every timing
    as time.NAME (time.total_s), and peak_memory_mb."""
    row = {"attack": rec.attack, "family": rec.family, "oracles": ",".join(rec.oracles) or "none", "seed": rec.seed,
           **{k: rec.setting.get(k) for k in setting_keys}}
    if rec.setting.get("epochs") is not None:
        row["epochs"] = rec.setting["epochs"]
    row.update(_flatten(rec.metrics))
    row.update(_flatten(rec.timings, "time."))
    row["peak_memory_mb"] = rec.peak_memory_mb
    return row


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested tables as dotted keys; values that are not scalars (lists, arrays) left out."""
    flat = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            flat[f"{prefix}{k}"] = v
    return flat


# The JSON type of every record field (a record may come from elsewhere: report reads any folder).
FIELD_TYPES = {"attack": str, "family": str, "config": dict, "threat_model": dict, "oracles": list, "seed": int,
               "setting": dict, "metrics": dict, "timings": dict, "peak_memory_mb": (int, float, type(None)),
               "stats": dict, "source": dict, "context": dict, "versions": dict}
