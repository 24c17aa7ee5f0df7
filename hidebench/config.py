"""One config base for recipes, attacks and experiments.

Configs are dataclasses that inherit `Config`: `from_dict` rejects unknown keys by name (with
their section path) and builds nested sections from nested dicts; `validate` (called from
`__post_init__`) checks values with the `check_*` helpers, which raise one HidebenchError that
shows the offending value's repr. `to_dict` is the inverse of `from_dict`.

Config files (TOML or JSON) and `--set SECTION.KEY=VALUE` overrides become the nested dict that
`from_dict` takes: `load_config`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from hidebench.types import HidebenchError, check_field_types


class Config:
    """Mixin for config dataclasses (see module docstring)."""

    section: str = ""       # name used in error messages, e.g. 'carlini.regression'

    def __post_init__(self):
        check_field_types(self, self.section)
        self.validate()

    def validate(self) -> None:
        """Check values; override in subclasses."""

    @classmethod
    def from_dict(cls, values: dict | None = None, *, where: str | None = None):
        where = where or cls.section or cls.__name__
        if values is None:
            values = {}
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise HidebenchError(f"{where} must be a table of keys, got {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise HidebenchError(f"unknown key(s) {', '.join(f'{where}.{u}' for u in unknown)}; "
                                 f"valid keys of {where}: {', '.join(sorted(fields))}")
        kwargs = {}
        for name, value in values.items():
            sub = _section_type(fields[name])
            if sub is not None:
                value = sub.from_dict(value, where=f"{where}.{name}")
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as e:           # a value of the wrong kind reached a comparison
            raise HidebenchError(f"{where}: {e}") from e

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _section_type(f: dataclasses.Field):
    """The Config subclass of a nested-section field (from its default), else None."""
    if f.default_factory is not dataclasses.MISSING:
        d = f.default_factory()
        return type(d) if isinstance(d, Config) else None
    return type(f.default) if isinstance(f.default, Config) else None


# ----------------------------------------------------------------------------- value checks

def check_int(value: Any, name: str, *, min: int | None = None, max: int | None = None) -> int:
    """An integer (not a bool), within [min, max]."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (min is not None and value < min) or (max is not None and value > max):
        rng = ("an integer" if min is None and max is None else
               f"an integer >= {min}" if max is None else
               f"an integer <= {max}" if min is None else f"an integer in [{min}, {max}]")
        raise HidebenchError(f"{name} must be {rng}, got {value!r}")
    return value


def check_float(value: Any, name: str, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False) -> float:
    """A finite number within the bounds (open bounds exclude the end)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and min is not None:
        ok = value > min if min_open else value >= min
    if ok and max is not None:
        ok = value < max if max_open else value <= max
    if not ok:
        lo = "" if min is None else f"{'(' if min_open else '['}{min}"
        hi = "" if max is None else f"{max}{')' if max_open else ']'}"
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (lo or hi) else ""
        raise HidebenchError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices) -> Any:
    if value not in tuple(choices):
        raise HidebenchError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_auto(value: Any, name: str, check) -> Any:
    """The string "auto" (a default the code resolves against the release, documented where the
    field is), or a value that `check(value, name)` accepts."""
    if value == "auto":
        return value
    if isinstance(value, str):
        raise HidebenchError(f"{name} must be \"auto\" or a value, got {value!r}")
    return check(value, name)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise HidebenchError(f"{name} must be true or false, got {value!r}")
    return value


# ----------------------------------------------------------------------------- files and --set

def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(config_file: str | Path | None = None, sets: list[str] | None = None, *,
                attack: str | None = None) -> dict:
    """Nested config dict from an optional JSON/TOML file, or a preset of `attack` by name
    (challenge_data/presets/ATTACK/NAME.toml, e.g. `--config demo`), plus SECTION.KEY=VALUE
    overrides (values parsed as JSON where they parse: numbers, true/false, lists; strings
    otherwise)."""
    from hidebench.stock import load_preset, preset_names

    cfg: dict = {}
    if config_file and attack and not Path(config_file).is_file() and str(config_file) in preset_names(attack):
        cfg = load_preset(attack, str(config_file))
    elif config_file:
        p = Path(config_file)
        if not p.is_file():
            presets = preset_names(attack) if attack else []
            raise HidebenchError(f"config file {p} does not exist" + (f" (presets of {attack}: {', '.join(presets)})"
                                                                      if presets else ""))
        text = p.read_text(errors="replace")
        if p.suffix == ".toml":
            import tomllib

            try:
                cfg = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise HidebenchError(f"config {p}: invalid TOML: {e}") from e
        else:
            try:
                cfg = json.loads(text)
            except json.JSONDecodeError as e:
                raise HidebenchError(f"config {p}: invalid JSON: {e}") from e
        if not isinstance(cfg, dict):
            raise HidebenchError(f"config {p} must hold a table/object")
    for item in sets or []:
        path, sep, value = item.partition("=")
        parts = [p.strip() for p in path.split(".")]
        if not sep or not all(parts):
            raise HidebenchError(f"--set expects KEY=VALUE or SECTION.KEY=VALUE (e.g. regression.steps=50), got {item!r}")
        d = cfg
        for part in parts[:-1]:
            d = d.setdefault(part, {})
            if not isinstance(d, dict):
                raise HidebenchError(f"--set {item}: {part} is not a section")
        d[parts[-1]] = _parse_value(value)
    return cfg
