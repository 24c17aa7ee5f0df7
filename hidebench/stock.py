"""The stock files installed with hidebench (package hidebench.challenge_data, the folder
challenge_data/ of the source tree): recipes (*.toml), sweeps (sweeps/*.toml), attack presets
(presets/ATTACK/NAME.toml: `--config NAME`) and the published figures the reports show beside
measured ones (anchors/*.json)."""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from hidebench.types import HidebenchError


def challenge_data():
    """The stock folder: installed as hidebench.challenge_data, or the source tree's
    challenge_data/ when a checkout's hidebench/ shadows the installed package (e.g. `python -m
    pytest` from the repository root)."""
    try:
        return resources.files("hidebench.challenge_data")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "challenge_data"


def preset_names(attack: str) -> list[str]:
    """The presets of an attack (`--config NAME`), sorted."""
    d = challenge_data() / "presets" / attack
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml")) if d.is_dir() else []


def load_preset(attack: str, name: str) -> dict:
    """An attack preset as a config dict (presets/ATTACK/NAME.toml)."""
    if name not in preset_names(attack):
        raise HidebenchError(f"{attack} has no preset {name!r}; presets: {', '.join(preset_names(attack)) or 'none'}")
    return tomllib.loads((challenge_data() / "presets" / attack / f"{name}.toml").read_text())
