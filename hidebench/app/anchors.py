"""Published figures that the sweep report's leaderboard ranks beside a sweep's own where the
setting is the one they were measured on (e.g. the InstaHide Challenge leaderboard's entries for
Carlini et al.'s attack). They are data, not code: one JSON file per entry in
hidebench.challenge_data's anchors/ folder, as RobustBench keeps one file per leaderboard entry,
each naming the paper, the attack, the setting, the metrics, what it cost and the source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from hidebench.types import HidebenchError

METRICS = ("Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2")
SETTING = ("scheme", "mode", "k", "T", "n_priv", "private_source")


@dataclass(frozen=True)
class Anchor:
    """One published leaderboard entry."""

    label: str               # how the leaderboard names it, e.g. 'Carlini et al. ver.1 (published)'
    paper: str               # the citation of the attack's paper
    attack: str              # the registered attack it corresponds to
    setting: dict            # SETTING: what it was measured on (private_source: a source name prefix)
    threat: str              # what the attacker had
    oracles: str
    metrics: dict            # METRICS, as published
    cost: str                # compute, as reported
    source: dict             # where the figures are published: citation, url

    def matches(self, setting: dict) -> bool:
        """Whether a setting (a results row) is the one these figures were measured on: the same
        scheme, mode, k, T and n_priv, and a private source under the anchor's (any slice of it)."""
        same = all(setting.get(k) == v for k, v in self.setting.items() if k != "private_source")
        return same and str(setting.get("private_source", "")).startswith(self.setting["private_source"])

    @property
    def setting_text(self) -> str:
        s = self.setting
        return ", ".join(f"{k}={s[k]}" for k in SETTING if k != "private_source") + f", {s['private_source']}"

    @property
    def citation(self) -> str:
        """Where the figures come from and the paper, in one line."""
        return f"{self.source['citation']}; {self.paper}"


def anchors_dir() -> Path:
    from hidebench.stock import challenge_data

    return Path(str(challenge_data() / "anchors"))


def load_anchors(folder=None) -> list[Anchor]:
    """Every anchors/*.json (by file name) of hidebench.challenge_data, or of `folder`; a
    HidebenchError names a file that is not an anchor entry and what it lacks."""
    folder = Path(folder) if folder is not None else anchors_dir()
    return [_read(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _read(path: Path) -> Anchor:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HidebenchError(f"anchor {path} is not readable JSON ({e})") from None
    want = {f.name: dict if f.type == "dict" else str for f in fields(Anchor)}
    bad = [k for k, t in want.items() if not isinstance(d.get(k) if isinstance(d, dict) else None, t)]
    if not bad:
        bad = [f"setting.{k}" for k in SETTING if k not in d["setting"]]
        bad += [f"metrics.{m}" for m in METRICS if not isinstance(d["metrics"].get(m), (int, float))]
        bad += [] if isinstance(d["source"].get("citation"), str) else ["source.citation"]
    if bad:
        raise HidebenchError(f"anchor {path} lacks (or has the wrong type of) {', '.join(bad)}")
    return Anchor(**{k: d[k] for k in want})
