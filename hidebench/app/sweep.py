"""Sweeps: one TOML file names a base recipe, the challenge seeds, a grid of recipe parameters and
the attacks to run on every cell; `run_sweep` generates each (cell, seed) challenge once, runs
every attack on it, and keeps one folder per run, so that a sweep resumes where it stopped.

    recipe = "faces"                 # base recipe: a stock name or a .toml path (relative to this file)
    seeds = [1, 2]                   # challenge-generation seeds (each attack keeps its own `seed`)
    imports = ["my_attacks"]         # optional: modules registering more attacks. Code: imported only
                                     # when the sweep runs (never to list or validate it)
    [grid]                           # any recipe parameter; every combination is a cell
    n_priv = [10, 20]
    T = [5, 10]
    [[attack]]
    name = "identity"
    [[attack]]
    name = "carlini"
    label = "carlini-oracle"         # optional: tells two entries of one attack apart
    config = { reassignment = { rounds = 0 } }      # validated by the attack
    threat = { aux = "lfw[1::2]", oracles = ["assignment"] }
    [utility]                        # optional: train a classifier per defense setting (accuracy)
    epochs = 12                      # the utility config (hidebench.defenses.utility.config), and
    vanilla = true                   # the vanilla reference (default true)

Folder layout (DIR = --out):

    DIR/sweep.json                       the validated sweep and its plan: every run, skipped cells and why
    DIR/challenges/CELL/seed=S/          one challenge per (cell, seed), shared by all attacks
    DIR/runs/CELL/seed=S/LABEL/          the harness's outputs (record.json, decryption.npy, cache/)
                               sweep_run.json   status (started, done, failed + error), input hash, host
    DIR/utility/SETTING/                 with [utility]: one training run per defense setting (scheme, mode,
                                         k, c1, c2, pool), shared by the cells that differ only in n_priv or T
    DIR/results.csv                      one row per planned run, rebuilt from the records every time

A run is finished when its sweep_run.json says done for the same input hash (challenge recipe and
seed, attack, full config, threat model, attack seed) and its record.json exists; anything else is
redone, so a killed sweep loses at most the runs in flight, and a changed sweep file reuses every
run whose inputs did not change. Runs execute in worker processes (`--backend local`, a spawn
ProcessPoolExecutor) or as Ray tasks (`--backend ray`); each worker gets its execution context
(device, threads, data root, cache folder, seed) in the task, never from the driver's environment.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import time
import traceback
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.challenge_io import check_out_dir, write_bytes, write_json
from hidebench.config import Config, check_int
from hidebench.recipes import OVERRIDES, Recipe, challenge_data, load_recipe, recipe_from_dict
from hidebench.resources import MAX_THREADS, MAX_WORKERS
from hidebench.types import HidebenchError

FORMAT = "hidebench-sweep/1"
MANIFEST = "sweep.json"
RESULTS = "results.csv"
RUN_STATUS = "sweep_run.json"
METRICS = ("Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2")
BACKENDS = ("local", "ray")
SETTING_COLUMNS = ("scheme", "mode", "k", "T", "n_priv", "n_encryptions")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# ----------------------------------------------------------------------------- the sweep file

@dataclass
class SweepAttack(Config):
    """One [[attack]] entry: a registered release attack, its config and threat model, its seed."""

    section = "attack"
    name: str = ""
    label: str | None = None
    config: dict = field(default_factory=dict)
    threat: dict = field(default_factory=dict)
    seed: int = 0

    def validate(self):
        if not self.name.strip():
            raise HidebenchError(f"{self.section}.name must name a registered attack (see `hidebench list`)")
        if self.label is not None and not _NAME.match(self.label):
            raise HidebenchError(f"{self.section}.label must be letters, digits and _ . + - (a folder name), "
                                 f"got {self.label!r}")
        check_int(self.seed, f"{self.section}.seed", min=0)
        for what in ("config", "threat"):
            if not isinstance(getattr(self, what), dict):
                raise HidebenchError(f"{self.section}.{what} must be a table, got {getattr(self, what)!r}")


@dataclass
class SweepSpec(Config):
    """The keys of a sweep file (see the module docstring)."""

    section = "sweep"
    recipe: str = ""
    name: str = ""
    description: str = ""
    seeds: list | None = None
    grid: dict = field(default_factory=dict)
    attack: list = field(default_factory=list)
    imports: list = field(default_factory=list)
    utility: dict | None = None

    def validate(self):
        if not self.recipe.strip():
            raise HidebenchError("sweep: missing key 'recipe' (a stock recipe name or a .toml path)")
        if self.seeds is not None:
            if not isinstance(self.seeds, list) or not self.seeds:
                raise HidebenchError(f"sweep.seeds must be a non-empty list of seeds, got {self.seeds!r}")
            for s in self.seeds:
                check_int(s, "sweep.seeds[]", min=0)
            if len(set(self.seeds)) != len(self.seeds):
                raise HidebenchError(f"sweep.seeds repeats a seed: {self.seeds}")
        if not isinstance(self.grid, dict):
            raise HidebenchError(f"sweep.grid must be a table of recipe parameters, got {self.grid!r}")
        if not isinstance(self.attack, list) or not self.attack:
            raise HidebenchError("sweep: no [[attack]] entries; name at least one attack, e.g. [[attack]] name = \"identity\"")
        if not isinstance(self.imports, list) or not all(isinstance(m, str) and m for m in self.imports):
            raise HidebenchError(f"sweep.imports must be a list of module names, got {self.imports!r}")


def _recipe_sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Recipe)
            if f.default_factory is not dataclasses.MISSING}


def _grid_target(key: str) -> tuple[str, str, str]:
    """(section, field, annotation) of a grid key: a flat override name (n_priv, T, k, ...) or SECTION.KEY."""
    sections = _recipe_sections()
    if key in OVERRIDES:
        section, name = OVERRIDES[key]
    else:
        section, _, name = key.partition(".")
    cls = sections.get(section)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    if name not in fields or (key not in OVERRIDES and "." not in key):
        valid = ", ".join(sorted(OVERRIDES)) + ", or SECTION.KEY for " + ", ".join(
            f"[{s}] {', '.join(f.name for f in dataclasses.fields(c))}" for s, c in sections.items())
        raise HidebenchError(f"unknown grid key grid.{key}; valid: {valid}")
    return section, name, str(fields[name].type)


def _value_ok(value, annotation: str) -> bool:
    options = [t.strip() for t in annotation.split("|")]
    if value is None:
        return "None" in options
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool)}
    known = [checks[t] for t in options if t in checks]
    return not known or any(c(value) for c in known)


def _flatten_grid(grid: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in grid.items():
        if isinstance(v, dict):
            out.update(_flatten_grid(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Sweep:
    """A validated sweep: the spec, its base recipe (as a full dict), the grid, the attacks."""

    name: str
    description: str
    recipe: str                      # as written in the file
    base: dict                       # the base recipe, every section filled in (Recipe.to_dict)
    seeds: list[int]
    grid: dict[str, list]            # key -> values, in file order
    attacks: list[dict]              # label, name, config (full), threat (full), seed, given (as written)
    imports: list[str]
    source: dict = field(default_factory=dict)   # path and text of the sweep file, when read from one
    utility: dict | None = None      # {"config": the full utility config, "vanilla": bool}, or None
    spec: dict = field(default_factory=dict)     # the dict it was validated from, and where its relative
    base_dir: Path | None = None                 # recipe paths start (to validate again after its imports)

    @property
    def n_cells(self) -> int:
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    @property
    def n_runs(self) -> int:
        """Attack runs (utility runs, one per distinct defense setting, come on top)."""
        return self.n_cells * len(self.seeds) * len(self.attacks)

    def cells(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "recipe": self.recipe, "seeds": self.seeds,
                "grid": self.grid, "grid_keys": list(self.grid), "attack": self.attacks, "imports": self.imports,
                "utility": self.utility}


def import_plugins(modules) -> None:
    """Import the sweep's `imports` (modules that register attacks) in the driver and in every worker."""
    import importlib

    for m in modules or ():
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise HidebenchError(f"sweep.imports: cannot import {m!r} ({e}); it must be importable on every worker") from e


def sweep_from_dict(d: dict, *, name: str = "sweep", base_dir: Path | None = None, source: dict | None = None,
                    run_imports: bool = False) -> Sweep:
    """Validate a sweep dict (as read from TOML); errors name the offending key.

    The file's `imports` are modules, i.e. code: they are imported only with run_imports (when
    the sweep runs), never to list or validate it. Without it, an [[attack]] that no built-in
    registers is kept unchecked ('unchecked': True) until the sweep runs."""
    from hidebench.attacks.base import ATTACKS, ReleaseAttack, get_attack
    from hidebench.threat import ReleaseThreatModel

    if not isinstance(d, dict):
        raise HidebenchError(f"sweep {name} must be a table of keys")
    try:
        spec = SweepSpec.from_dict(d)
    except HidebenchError as e:
        raise HidebenchError(f"sweep {name}: {e}") from None
    name = spec.name or name
    if not _NAME.match(name):
        raise HidebenchError(f"sweep.name must be letters, digits and _ . + -, got {name!r}")
    if run_imports:
        import_plugins(spec.imports)
    get_attack("identity")          # registers the built-in attacks

    recipe_ref = spec.recipe
    p = Path(recipe_ref).expanduser()
    if (p.suffix == ".toml" or len(p.parts) > 1) and not p.is_absolute() and base_dir is not None:
        p = base_dir / p
        recipe_ref = str(p)
    try:
        base_recipe = load_recipe(recipe_ref)
    except HidebenchError as e:
        raise HidebenchError(f"sweep {name}: recipe: {e}") from None
    base = base_recipe.to_dict()
    seeds = spec.seeds
    if seeds is None:
        if base_recipe.seed is None:
            raise HidebenchError(f"sweep {name}: give the challenge-generation seeds, e.g. seeds = [1, 2] "
                                 f"(recipe {base_recipe.name} has no fixed seed)")
        seeds = [base_recipe.seed]

    grid = {}
    for key, values in _flatten_grid(spec.grid).items():
        if key == "seed":
            raise HidebenchError(f"sweep {name}: grid.seed: list the challenge seeds in `seeds = [...]`")
        _, _, annotation = _grid_target(key)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise HidebenchError(f"sweep {name}: grid.{key} lists no values")
        for v in values:
            if isinstance(v, (list, dict)) or not _value_ok(v, annotation):
                raise HidebenchError(f"sweep {name}: grid.{key} values must be of type {annotation}, got {v!r}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise HidebenchError(f"sweep {name}: grid.{key} repeats a value: {values}")
        grid[key] = values

    attacks, labels = [], set()
    for i, entry in enumerate(spec.attack):
        where = f"attack[{i}]"
        try:
            a = SweepAttack.from_dict(entry, where=where)
        except HidebenchError as e:
            raise HidebenchError(f"sweep {name}: {e}") from None
        label = a.label or a.name
        if a.name not in ATTACKS and spec.imports and not run_imports:
            if label in labels:
                raise HidebenchError(f"sweep {name}: two [[attack]] entries are labelled {label!r}; give each its own "
                                     "`label`")
            labels.add(label)
            attacks.append({"label": label, "name": a.name, "config": a.config, "threat": a.threat, "seed": a.seed,
                            "given": {"config": a.config, "threat": a.threat}, "unchecked": True})
            continue
        cls = get_attack(a.name)
        if not issubclass(cls, ReleaseAttack):
            raise HidebenchError(f"sweep {name}: {where}: {a.name} attacks a federated update; sweeps run release "
                                 "attacks on the challenges they generate")
        label = a.label or a.name
        if label in labels:
            raise HidebenchError(f"sweep {name}: two [[attack]] entries are labelled {label!r}; give each its own "
                                 "`label`")
        labels.add(label)
        try:
            threat = ReleaseThreatModel.from_dict(a.threat)
            attack = cls(a.config, threat)
        except HidebenchError as e:
            raise HidebenchError(f"sweep {name}: {where} ({label}): {e}") from None
        attacks.append({"label": label, "name": a.name, "config": attack.config.to_dict(),
                        "threat": json.loads(json.dumps(dataclasses.asdict(threat))), "seed": a.seed,
                        "given": {"config": a.config, "threat": a.threat}})
    utility = None
    if spec.utility is not None:
        from hidebench.defenses.utility.config import UtilityConfig

        if not isinstance(spec.utility, dict):
            raise HidebenchError(f"sweep {name}: [utility] must be a table, got {spec.utility!r}")
        given = dict(spec.utility)
        vanilla = given.pop("vanilla", True)
        if not isinstance(vanilla, bool):
            raise HidebenchError(f"sweep {name}: utility.vanilla must be true or false, got {vanilla!r}")
        try:
            utility = {"config": UtilityConfig.from_dict(given).to_dict(), "vanilla": vanilla}
        except HidebenchError as e:
            raise HidebenchError(f"sweep {name}: {e}" + (" (and vanilla)" if "valid keys" in str(e) else "")) from None
    return Sweep(name=name, description=spec.description, recipe=spec.recipe, base=base, seeds=list(seeds), grid=grid,
                 attacks=attacks, imports=list(spec.imports), source=source or {}, utility=utility, spec=d,
                 base_dir=base_dir)


def sweeps_dir():
    return challenge_data() / "sweeps"


def builtin_sweeps() -> list[str]:
    d = sweeps_dir()
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml")) if d.is_dir() else []


def load_sweep(name_or_path, *, run_imports: bool = False) -> Sweep:
    """A stock sweep by name (`hidebench list`) or a sweep TOML file by path; run_imports: see
    sweep_from_dict."""
    import tomllib

    if isinstance(name_or_path, Sweep):
        sw = name_or_path
        if not (run_imports and sw.imports):
            return sw
        return sweep_from_dict(sw.spec, name=sw.name, base_dir=sw.base_dir, source=sw.source, run_imports=True)
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise HidebenchError(f"sweep file {p} does not exist")
        text, base_dir, name, path = p.read_text(errors="replace"), p.resolve().parent, p.stem, str(p.resolve())
    else:
        res = sweeps_dir() / f"{name_or_path}.toml"
        if not res.is_file():
            raise HidebenchError(f"unknown sweep {str(name_or_path)!r}; stock sweeps: {builtin_sweeps()} (or give a .toml path)")
        text, base_dir, name, path = res.read_text(), None, str(name_or_path), f"stock:{name_or_path}"
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise HidebenchError(f"sweep {name}: invalid TOML: {e}") from None
    return sweep_from_dict(d, name=name, base_dir=base_dir, source={"path": path, "text": text},
                           run_imports=run_imports)


# ----------------------------------------------------------------------------- the plan

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _fmt(v) -> str:
    return json.dumps(v) if v is None or isinstance(v, bool) else str(v)


def cell_id(cell: dict) -> str:
    """A cell's folder name: key=value pairs joined by '_' ('base' for an empty grid)."""
    if not cell:
        return "base"
    parts = [f"{k}={re.sub(r'[^A-Za-z0-9.+-]', '-', _fmt(v))}" for k, v in cell.items()]
    return "_".join(parts)


def cell_label(cell: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in cell.items()) or "base recipe"


def _cell_recipe(sweep: Sweep, cell: dict) -> Recipe:
    d = json.loads(json.dumps(sweep.base))
    for key, value in cell.items():
        section, name, _ = _grid_target(key)
        d[section][name] = value
    return recipe_from_dict(d)


class _SourceError(HidebenchError):
    """A private source that cannot be sized (e.g. no data root): an error of the sweep, not of a cell."""


def _feasibility(recipe: Recipe, data_root, sizes: dict, strict: bool) -> str | None:
    """Why a cell's recipe cannot be generated (None: it can, or could not be checked without data)."""
    from hidebench.data import source_size

    src = recipe.private.source
    if src not in sizes:
        try:
            sizes[src] = source_size(src, data_root=data_root)
        except HidebenchError as e:
            if strict:
                raise _SourceError(f"private source {src}: {e}") from None
            sizes[src] = None
    n, have = recipe.private.n_priv, sizes[src]
    if have is not None and n > have:
        return f"n_priv={n} but {src} has only {have} images"
    slots = recipe.scheme.n_private_slots
    if n < slots:
        return f"k={recipe.scheme.k} {recipe.scheme.mode}-dataset needs at least {slots} private images, n_priv={n}"
    return None


def make_plan(sweep: Sweep, out_dir=None, *, data_root=None, strict: bool = True) -> dict:
    """Every (cell, seed, attack) run with its folders and input hash; infeasible cells skipped
    with the reason. strict: a private source that cannot be sized (no data root) is an error;
    otherwise its cells are listed unchecked. Reuses run folders of `out_dir` whose inputs match."""
    out = Path(out_dir) if out_dir is not None else None
    sizes: dict = {}
    runs, skipped, challenges = [], [], {}
    for cell in sweep.cells():
        cid = cell_id(cell)
        try:
            recipe = _cell_recipe(sweep, cell)
            reason = _feasibility(recipe, data_root, sizes, strict)
        except _SourceError:
            raise
        except HidebenchError as e:
            recipe, reason = None, str(e)
        if reason:
            skipped.append({"cell": cell, "cell_id": cid, "reason": reason})
        for seed in sweep.seeds:
            ch_rel = f"challenges/{cid}/seed={seed}"
            if recipe is not None and not reason:
                rdict = dataclasses.replace(recipe, seed=seed).to_dict()
                challenges[ch_rel] = {"dir": ch_rel, "recipe": rdict, "seed": seed, "hash": _digest(rdict)}
            for a in sweep.attacks:
                entry = {"run_id": f"{cid}/seed={seed}/{a['label']}", "cell": cell, "cell_id": cid, "seed": seed,
                         "label": a["label"], "attack": a["name"], "attack_seed": a["seed"],
                         "oracles": list(a["threat"].get("oracles") or []), "aux": a["threat"].get("aux"),
                         "public_pool": a["threat"].get("public_pool"), "challenge": ch_rel,
                         "run_dir": f"runs/{cid}/seed={seed}/{a['label']}", "setting": _setting(sweep, cell, recipe)}
                if reason:
                    entry.update(status="skipped", reason=reason, input_hash=None)
                else:
                    entry.update(status="planned", reason=None, input_hash=_digest(
                        {"challenge": challenges[ch_rel]["hash"], "attack": a["name"], "config": a["config"],
                         "threat": a["threat"], "seed": a["seed"]}))
                runs.append(entry)
    if sweep.utility is not None:
        runs += _utility_runs(sweep)
    if out is not None:
        _reuse_challenges(out, challenges, runs)
        _reuse_folders(out, runs)
    return {"runs": runs, "skipped_cells": skipped, "challenges": list(challenges.values())}


def _utility_runs(sweep: Sweep) -> list[dict]:
    """One utility run per distinct defense setting of the feasible cells (cells that differ only
    in n_priv, T or the private images share it), and the vanilla reference."""
    from hidebench.app.utility import utility_setting
    from hidebench.defenses.utility.config import UtilityConfig

    cfg = UtilityConfig.from_dict(sweep.utility["config"])
    runs, seen = [], set()
    cells = []
    for cell in sweep.cells():
        try:
            cells.append((cell, _cell_recipe(sweep, cell)))
        except HidebenchError:          # an invalid recipe: its attack runs say why
            continue
    todo = [(cell, r, False) for cell, r in cells]
    if sweep.utility["vanilla"] and cells:
        todo.insert(0, (cells[0][0], cells[0][1], True))
    for cell, recipe, vanilla in todo:
        try:
            setting = utility_setting(recipe, cfg, vanilla)
        except HidebenchError as e:
            setting, reason = None, str(e)
        else:
            reason = None
        rid = "vanilla" if vanilla else (f"{setting['scheme']}-{setting['mode']}-k{setting['k']}-{_digest(setting)[:8]}"
                                         if setting else cell_id(cell))
        if rid in seen:
            continue
        seen.add(rid)
        entry = {"run_id": f"utility/{rid}", "cell": cell, "cell_id": "utility", "seed": 0, "label": "utility",
                 "attack": "utility", "attack_seed": 0, "oracles": [], "aux": None, "public_pool": None,
                 "challenge": None, "run_dir": f"utility/{rid}",
                 "setting": {"scheme": setting["scheme"] if setting else None, "mode": setting and setting["mode"],
                             "k": setting and setting["k"], "T": cfg.epochs, "n_priv": None, "n_encryptions": None,
                             "recipe": recipe.name, "private_source": setting and setting["train"]},
                 "utility": {"recipe": recipe.to_dict(with_seed=False), "config": sweep.utility["config"],
                             "vanilla": vanilla}}
        if reason:
            entry.update(status="skipped", reason=reason, input_hash=None)
        else:
            entry.update(status="planned", reason=None,
                         input_hash=_digest({"utility": setting, "config": sweep.utility["config"], "seed": 0}))
        runs.append(entry)
    return runs


def _reuse_challenges(out: Path, challenges: dict, runs: list[dict]) -> None:
    """Point a planned challenge (and its runs) at an existing challenge folder holding the same
    recipe and seed when its own folder does not, and no planned challenge owns that folder."""
    if not (out / "challenges").is_dir():
        return
    missing = [c for c in challenges.values() if not challenge_matches(out / c["dir"], c["recipe"], c["seed"])]
    if not missing:
        return
    others = [p for p in sorted((out / "challenges").glob("*/*"))
              if p.is_dir() and p.relative_to(out).as_posix() not in challenges]
    for c in missing:
        match = next((p for p in others if challenge_matches(p, c["recipe"], c["seed"])), None)
        if match is None:
            continue
        others.remove(match)
        old, c["dir"] = c["dir"], match.relative_to(out).as_posix()
        for r in runs:
            if r["challenge"] == old:
                r["challenge"] = c["dir"]


def _setting(sweep: Sweep, cell: dict, recipe: Recipe | None) -> dict:
    """scheme, mode, k, T, n_priv, n_encryptions, recipe, private_source of a cell (raw values when
    the cell's recipe is infeasible)."""
    if recipe is not None:
        s, p = recipe.scheme, recipe.private
        return {"scheme": s.scheme, "mode": s.mode, "k": s.k, "T": s.T, "n_priv": p.n_priv, "n_encryptions": p.n_priv * s.T,
                "recipe": recipe.name, "private_source": p.source}
    d = json.loads(json.dumps(sweep.base))
    for key, value in cell.items():
        section, name, _ = _grid_target(key)
        d[section][name] = value
    s, p = d["scheme"], d["private"]
    n_enc = p["n_priv"] * s["T"] if all(isinstance(x, int) for x in (p["n_priv"], s["T"])) else None
    return {"scheme": s["scheme"], "mode": s["mode"], "k": s["k"], "T": s["T"], "n_priv": p["n_priv"],
            "n_encryptions": n_enc, "recipe": d["name"], "private_source": p["source"]}


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) else None


def _reuse_folders(out: Path, runs: list[dict]) -> None:
    """Point a planned run at an existing finished run folder with the same input hash when its
    own folder does not hold one (e.g. after a grid key was added) and no planned run owns that folder."""
    todo = [r for r in runs if r["status"] == "planned" and run_state(out, r)[0] != "done"]
    if not todo or not (out / "runs").is_dir():
        return
    owned = {r["run_dir"] for r in runs}
    done = {}
    for st_path in (out / "runs").rglob(RUN_STATUS):
        rel = st_path.parent.relative_to(out).as_posix()
        st = _read_json(st_path)
        if rel not in owned and st and st.get("status") == "done" and (st_path.parent / "record.json").is_file():
            done.setdefault(st.get("input_hash"), rel)
    for r in todo:
        if r["input_hash"] in done:
            r["run_dir"] = done.pop(r["input_hash"])


def run_state(out: Path, entry: dict) -> tuple[str, dict]:
    """(status, sweep_run.json) of a planned run in `out`: done, failed, started (running now or
    interrupted), pending (never run, or run with other inputs), or skipped."""
    if entry.get("status") == "skipped":
        return "skipped", {}
    d = Path(out) / entry["run_dir"]
    st = _read_json(d / RUN_STATUS)
    if st is None:
        if (d / RUN_STATUS).exists():          # written by a run, then damaged: the run's outcome is unknown
            return "failed", {"error": f"{RUN_STATUS} is unreadable (rerun with --retry-failed)"}
        return "pending", {}
    if st.get("input_hash") != entry["input_hash"]:
        return "pending", {}
    status = st.get("status")
    if status == "done" and (d / "record.json").is_file():
        from hidebench.record import load_record

        try:
            load_record(d / "record.json")
        except HidebenchError as e:
            return "failed", {**st, "error": f"{_one_line(e)} (rerun with --retry-failed)"}
        return "done", st
    if status in ("failed", "started"):
        return status, st
    return "pending", st


def challenge_matches(ch_dir: Path, recipe: dict, seed: int) -> bool:
    """Whether a challenge folder holds the generation of `recipe` at `seed`."""
    from hidebench.challenge_io import read_seed

    m = _read_json(ch_dir / "manifest.json")
    if not m or not (ch_dir / "key" / "manifest.json").is_file() or not (ch_dir / "key" / "seed").is_file():
        return False
    want = {k: v for k, v in recipe.items() if k != "seed"}
    try:
        return _digest(m.get("recipe")) == _digest(want) and read_seed(ch_dir / "key" / "seed") == seed
    except HidebenchError:
        return False


# ----------------------------------------------------------------------------- worker tasks

def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg if isinstance(e, HidebenchError) and msg else f"{type(e).__name__}: {msg}".rstrip(": ")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _thread_limits(threads: int):
    if not threads:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _warm_up(attack: str) -> float:
    """Import what the attack imports lazily before the run (every module named by an import
    statement anywhere in its package's source, function bodies included, and torch's lazily
    imported compiler stack when it uses torch), so that a run in a fresh worker process does not
    count one-off import costs in its timings; seconds spent."""
    import ast
    import importlib

    from hidebench.attacks.base import get_attack

    t0 = time.perf_counter()
    names = []
    module = importlib.import_module(get_attack(attack).__module__)
    package = module.__name__.rpartition(".")[0]
    files = [Path(module.__file__)]
    if package.count(".") >= 2:                 # an attack in its own package, e.g. hidebench.attacks.carlini
        files = sorted(Path(importlib.import_module(package).__file__).parent.glob("*.py"))
    for f in files:
        try:
            tree = ast.parse(f.read_text())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module)
    if any(n == "torch" or n.startswith("torch.") for n in names):
        names += ["torch", "torch._dynamo"]     # torch.optim imports torch._dynamo (and sympy) on first use
    for name in dict.fromkeys(names):
        try:
            importlib.import_module(name)
        except Exception:                   # an optional dependency; the run itself reports what it needs
            pass
    return time.perf_counter() - t0


def _reset_peak_rss() -> None:
    """Linux: reset the kernel's peak-RSS mark of this (possibly reused) worker process to its
    current RSS, so that the run's recorded peak memory is its own and not an earlier run's
    (/proc/self/clear_refs, mode 5). Elsewhere the peak is the process's; use fresh workers."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def execute_challenge(task: dict) -> dict:
    """Worker task: generate one (cell, seed) challenge unless the folder already holds it."""
    import_plugins(task.get("imports"))
    ch_dir = Path(task["dir"])
    t0 = time.perf_counter()
    if challenge_matches(ch_dir, task["recipe"], task["seed"]):
        return {"ok": True, "reused": True, "wall_s": 0.0}
    try:
        from hidebench.defenses.challenge import generate_to_dir

        recipe = recipe_from_dict(task["recipe"])
        with _thread_limits(task.get("threads", 0)):
            generate_to_dir(recipe, ch_dir, seed=task["seed"], data_root=task.get("data_root"), progress=False,
                            overwrite=True)
    except Exception as e:
        return {"ok": False, "error": _one_line(e), "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0}
    return {"ok": True, "reused": False, "wall_s": time.perf_counter() - t0}


def _tracked_run(task: dict, body, prepare=None) -> dict:
    """Run `body(ctx, run_dir) -> (metrics, time_s)` in its run folder, with sweep_run.json written
    around it (started, then done or failed with the error); `prepare()` adds fields to the status
    after 'started' is written (the attack's import time). Returns the final status."""
    from hidebench.context import ExecutionContext

    run_dir = Path(task["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"run_id": task["run_id"], "input_hash": task["input_hash"], "attack": task["attack"],
            "host": socket.gethostname(), "pid": os.getpid(), "niceness": os.nice(0)}
    write_json(run_dir / RUN_STATUS, {**base, "status": "started", "started": _now()})
    (run_dir / "record.json").unlink(missing_ok=True)      # a record here is from an unfinished attempt
    if prepare is not None:
        base.update(prepare())
    _reset_peak_rss()
    t0 = time.perf_counter()
    try:
        ctx = ExecutionContext(**task["context"])
        with _thread_limits(ctx.threads):
            metrics, time_s = body(ctx, run_dir)
        status = {"status": "done", "metrics": metrics, "time_s": time_s}
    except Exception as e:
        status = {"status": "failed", "error": _one_line(e), "traceback": traceback.format_exc()}
    status.update(wall_s=time.perf_counter() - t0, finished=_now())
    write_json(run_dir / RUN_STATUS, {**base, **status})
    return {k: v for k, v in {**base, **status}.items() if k != "traceback"}


def execute_run(task: dict) -> dict:
    """Worker task: run one attack on one challenge through the harness (`_tracked_run`)."""
    import_plugins(task.get("imports"))
    from hidebench.app.harness import run_release_attack
    from hidebench.threat import ReleaseThreatModel

    def prepare():
        global _RUNS_IN_THIS_PROCESS
        before = _RUNS_IN_THIS_PROCESS       # 0: a fresh process, its peak memory is the run's own
        _RUNS_IN_THIS_PROCESS += 1
        return {"runs_before_in_process": before, "import_s": _warm_up(task["attack"])}

    def body(ctx, run_dir):
        rec = run_release_attack(task["attack"], task["challenge"], run_dir, config=task["config"],
                                 threat=ReleaseThreatModel.from_dict(task["threat"]), ctx=ctx)
        return rec.metrics.get("challenge", {}), rec.timings.get("total_s")

    return _tracked_run(task, body, prepare)


_RUNS_IN_THIS_PROCESS = 0


def execute_utility(task: dict) -> dict:
    """Worker task: train and test one defense setting (hidebench.app.utility), resuming from its
    epoch checkpoint (`_tracked_run`)."""
    from hidebench.app.utility import run_utility
    from hidebench.defenses.utility.config import UtilityConfig

    def body(ctx, run_dir):
        u = task["utility"]
        rec = run_utility(recipe_from_dict(u["recipe"]), run_dir, UtilityConfig.from_dict(u["config"]),
                          vanilla=u["vanilla"], ctx=ctx)
        return rec.metrics, rec.timings.get("total_s")

    return _tracked_run(task, body)


def _write_failed(run_dir: Path, task: dict, error: str) -> dict:
    st = {"run_id": task["run_id"], "input_hash": task["input_hash"], "attack": task["attack"], "status": "failed",
          "error": error, "finished": _now(), "host": socket.gethostname()}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_STATUS, st)
    return st


# ----------------------------------------------------------------------------- backends

class _LocalBackend:
    """Worker processes (spawn) from concurrent.futures, kept between tasks, or with fresh a new
    process for every run (challenge generations keep sharing long-lived ones); workers=0 runs
    tasks in this process."""

    name = "local"

    def __init__(self, workers: int, fresh: bool = False):
        self.workers, self.reuse = workers, not fresh
        self.capacity = max(workers, 1)
        self.pool = self.gen_pool = None
        if workers:
            self._start()

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")
        init = {"initializer": exit_with_parent, "initargs": (os.getpid(),)}
        self.pool = ProcessPoolExecutor(self.workers, mp_context=spawn, max_tasks_per_child=None if self.reuse else 1,
                                        **init)
        self.gen_pool = self.pool if self.reuse else ProcessPoolExecutor(self.workers, mp_context=spawn, **init)

    def submit(self, fn, task):
        from concurrent.futures import Future

        if self.pool is not None:
            return (self.pool if fn is execute_run else self.gen_pool).submit(fn, task)
        fut = Future()
        try:
            fut.set_result(fn(task))
        except Exception as e:           # a KeyboardInterrupt goes through to the driver
            fut.set_exception(e)
        return fut

    def wait(self, handles, timeout):
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, handle):
        return handle.result()

    def crashed(self, exc) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)

    def _pools(self):
        return [p for p in dict.fromkeys((self.pool, self.gen_pool)) if p is not None]

    def restart(self):
        for pool in self._pools():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            self._start()

    def close(self, handles=(), cancel: bool = False):
        for pool in self._pools():
            if cancel:
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for p in procs:            # the pool's own worker processes, by their handles
                    if p.is_alive():
                        p.terminate()      # SIGTERM: the worker exits cleanly (exit_with_parent)
                for p in procs:
                    p.join(10)
                    if p.is_alive():
                        p.kill()
            # joins the pool's manager thread, which releases its queues' semaphores (no
            # leaked-semaphore warning from the resource tracker at exit)
            pool.shutdown(wait=True)


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the driver dies, even by SIGKILL, instead of
    running on as an orphan. Linux: the kernel sends SIGKILL on the parent's death
    (prctl PR_SET_PDEATHSIG); everywhere: a daemon thread that polls the parent's pid. SIGTERM
    (the driver stopping its workers) exits through the interpreter's exit path, so that
    multiprocessing objects the run created are released (no leaked-semaphore warning)."""
    import signal
    import sys
    import threading

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)    # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:           # the parent died before the call above
        os._exit(1)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="hidebench-parent-watch").start()


class _RayBackend:
    """Each task is a Ray task (`ray.remote`), on a local Ray started for the sweep or on the
    cluster at `address`; Ray schedules them by the CPUs each asks for (the threads per run)."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None, fresh: bool = False):
        try:
            import ray
        except ImportError:
            raise HidebenchError("--backend ray needs Ray: pip install 'hidebench[ray]'") from None
        self.ray, self.threads, self.capacity, self.reuse = ray, threads, None, not fresh
        self.started = not ray.is_initialized()
        if self.started:
            try:
                quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
                if address:
                    ray.init(address=address, **quiet)
                else:
                    # worker_niceness 0: Ray starts its workers at niceness 15, so any other job on the
                    # machine starves them (importing torch took 65 s instead of 3.5 s beside two jobs)
                    ray.init(address="local", num_cpus=max(workers, 1) * threads, include_dashboard=False,
                             object_store_memory=200 * 2 ** 20, _system_config={"worker_niceness": 0}, **quiet)
            except Exception as e:
                raise HidebenchError(f"could not {'connect to Ray at ' + address if address else 'start a local Ray'}: "
                                     f"{_one_line(e)}") from None
        self._remote = {}

    def submit(self, fn, task):
        if fn not in self._remote:
            fresh = fn is execute_run and not self.reuse       # a fresh worker process per run
            self._remote[fn] = self.ray.remote(num_cpus=self.threads, max_calls=1 if fresh else 0)(fn)
        return self._remote[fn].remote(task)

    def wait(self, handles, timeout):
        done, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        return done

    def result(self, handle):
        return self.ray.get(handle)

    def crashed(self, exc) -> bool:
        return False

    def restart(self):
        pass

    def close(self, handles=(), cancel: bool = False):
        if cancel:
            for h in handles:
                try:
                    self.ray.cancel(h, force=True)
                except Exception:
                    pass
        if self.started:
            self.ray.shutdown()


# ----------------------------------------------------------------------------- results

FIRST_COLUMNS = ("run_id", "attack", "label", "status", *SETTING_COLUMNS, "seed", "attack_seed")
METRIC_COLUMNS = (*METRICS, "time_s", "peak_memory_mb", "wall_s")
LAST_COLUMNS = ("oracles", "aux", "public_pool", "recipe", "private_source", "host", "device",
                "runs_before_in_process", "error", "reason", "run_dir", "challenge")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def read_manifest(out_dir) -> dict:
    p = Path(out_dir) / MANIFEST
    m = _read_json(p)
    if m is None or m.get("format") != FORMAT:
        raise HidebenchError(f"{out_dir} is not a sweep folder: {MANIFEST} is missing or unreadable "
                             "(run `hidebench sweep SWEEP --out DIR` first)")
    sw, runs = m.get("sweep"), m.get("runs")
    ok = (isinstance(sw, dict) and isinstance(sw.get("grid"), dict) and isinstance(sw.get("attack"), list)
          and all(isinstance(a, dict) and isinstance(a.get("label"), str) for a in sw["attack"])
          and isinstance(sw.get("name"), str) and isinstance(runs, list)
          and all(isinstance(r, dict) and all(isinstance(r.get(k), t) for k, t in _RUN_FIELDS.items()) for r in runs))
    if not ok:
        raise HidebenchError(f"{Path(out_dir) / MANIFEST} is damaged: its sweep or runs do not have the fields "
                             "hidebench writes (rerun the sweep to rewrite it)")
    return m


# The fields of a planned run that the results and the report read, with their JSON types.
_RUN_FIELDS = {"run_id": str, "attack": str, "label": str, "run_dir": str, "cell": dict, "setting": dict,
               "oracles": list, "status": str}


def grid_order(manifest: dict) -> list[str]:
    """The grid keys in the sweep file's order (sweep.json stores its tables with sorted keys)."""
    sweep = manifest["sweep"]
    return list(sweep.get("grid_keys") or sweep["grid"])


def is_sweep_dir(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def results_table(out_dir):
    """One row per planned run of the sweep in out_dir, from its plan (sweep.json), each run's
    sweep_run.json and record.json: columns FIRST_COLUMNS, the grid keys, METRIC_COLUMNS, the
    private-set and stage metrics, per-stage timings (time.*), then LAST_COLUMNS."""
    import pandas as pd

    from hidebench.record import load_record

    out = Path(out_dir)
    manifest = read_manifest(out)
    grid_keys = grid_order(manifest)
    rows = []
    for entry in manifest["runs"]:
        status, st = run_state(out, entry)
        row = {"run_id": entry["run_id"], "attack": entry["attack"], "label": entry["label"], "status": status,
               **{k: entry["setting"].get(k) for k in SETTING_COLUMNS}, "seed": entry["seed"],
               "attack_seed": entry["attack_seed"], **{k: v for k, v in entry["cell"].items() if k not in SETTING_COLUMNS},
               "oracles": ",".join(entry["oracles"]) or "none", "aux": entry["aux"], "public_pool": entry["public_pool"],
               "recipe": entry["setting"].get("recipe"), "private_source": entry["setting"].get("private_source"),
               "host": st.get("host"), "error": st.get("error") if status == "failed" else None,
               "reason": entry.get("reason"), "run_dir": entry["run_dir"], "challenge": entry["challenge"]}
        if status == "done":
            rec = load_record(out / entry["run_dir"] / "record.json")
            row.update({k: rec.setting.get(k) for k in SETTING_COLUMNS if rec.setting.get(k) is not None})
            row.update(rec.metrics.get("challenge", {}))
            row["time_s"] = rec.timings.get("total_s")
            row["peak_memory_mb"] = rec.peak_memory_mb
            row["wall_s"] = st.get("wall_s")
            row["runs_before_in_process"] = st.get("runs_before_in_process")
            row.update(_flatten({k: v for k, v in rec.metrics.items() if k != "challenge"}))
            row.update(_flatten(rec.timings, "time."))
            row["aux"] = rec.threat_model.get("aux")
            row["device"] = rec.context.get("device")
        rows.append(row)
    fixed = [*FIRST_COLUMNS, *[k for k in grid_keys if k not in SETTING_COLUMNS and k not in LAST_COLUMNS],
             *METRIC_COLUMNS]
    extra = sorted({k for r in rows for k in r} - set(fixed) - set(LAST_COLUMNS))
    df = pd.DataFrame(rows, columns=[*fixed, *extra, *LAST_COLUMNS])
    for col in ("k", "T", "n_priv", "n_encryptions", "seed", "attack_seed"):    # integers, empty where they do not apply
        v = pd.to_numeric(df[col], errors="coerce")
        numeric = df[col].map(lambda x: x is None or isinstance(x, (int, float))).all()
        if numeric and v.notna().any() and (v.dropna() % 1 == 0).all():
            df[col] = v.astype("Int64")
    return df


def write_results(out_dir) -> Path:
    """Rebuild DIR/results.csv from the records (atomically)."""
    out = Path(out_dir)
    df = results_table(out)
    write_bytes(out / RESULTS, df.to_csv(index=False).encode())
    return out / RESULTS


# ----------------------------------------------------------------------------- the driver

@dataclass
class SweepSummary:
    out: Path
    name: str
    backend: str
    workers: int
    threads: int
    total: int = 0
    done: int = 0                                       # finished runs, reused ones included
    reused: int = 0                                     # finished before this invocation
    executed: list = field(default_factory=list)       # run ids this invocation ran (done or failed)
    failed: list = field(default_factory=list)         # (run id, error) of every failed run
    skipped_cells: list = field(default_factory=list)  # (cell, reason)
    skipped_runs: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    run_wall_s: list = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Runs not finished: never run, interrupted, or lost with a worker."""
        return self.total - self.done - len(self.failed) - self.skipped_runs

    def text(self, table=None, grid_keys=(), max_rows: int = 12) -> str:
        n_failed = len(self.failed)
        how = (f"{self.workers} worker(s) x {self.threads} thread(s)" if self.workers else
               f"in this process, {self.threads} thread(s)")
        lines = [f"sweep {self.name} -> {self.out} ({self.backend} backend, {how})",
                 f"runs: {self.total} planned | {self.done} done ({self.done - self.reused} now, {self.reused} reused) | "
                 f"{n_failed} failed | {self.skipped_runs} skipped ({len(self.skipped_cells)} infeasible cell(s)) | "
                 f"{self.pending} not finished" + (" | INTERRUPTED" if self.interrupted else "")]
        if self.run_wall_s:
            w = sorted(self.run_wall_s)
            lines.append(f"wall {_duration(self.wall_s)}; per run: mean {sum(w) / len(w):.1f} s, max {w[-1]:.1f} s")
        for rid, err in self.failed[:5]:
            lines.append(f"  failed {rid}: {err[:150]}")
        if n_failed > 5:
            lines.append(f"  ... and {n_failed - 5} more failed (see results.csv, column error)")
        for cell, reason in self.skipped_cells[:5]:
            lines.append(f"  skipped {cell}: {reason[:150]}")
        if len(self.skipped_cells) > 5:
            lines.append(f"  ... and {len(self.skipped_cells) - 5} more skipped cells")
        if table is not None:
            lines += _score_lines(table, grid_keys, max_rows)
        if n_failed:
            lines.append("rerun with --retry-failed to redo the failed runs")
        lines.append(f"wrote {self.out / RESULTS}; report: hidebench report {self.out} --out {self.out / 'report'}")
        return "\n".join(lines)


def _duration(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s" if s >= 60 else f"{s:.1f}s"


def _score_lines(df, grid_keys, max_rows: int) -> list[str]:
    """Max_SSIM (mean over seeds) per setting and attack: the sweep at a glance."""
    d = df[df["status"] == "done"]
    acc = d[d["attack"] == "utility"]
    d = d[d["attack"] != "utility"]
    out = []
    for _, r in acc.iterrows():
        enc = r.get("test_accuracy_encrypted")
        out.append(f"  test accuracy {r['run_id'].split('/', 1)[1]}: clean {r['test_accuracy_clean']:.3f}"
                   + (f", encrypted {enc:.3f}" if isinstance(enc, float) and enc == enc else ""))
    if d.empty:
        return out
    varying = [k for k in grid_keys if k in d and d[k].astype(str).nunique() > 1]
    setting = d[varying].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1) \
        if varying else "all"
    piv = d.assign(_setting=setting).pivot_table(index="_setting", columns="label", values="Max_SSIM",
                                                 aggfunc="mean", sort=False)
    labels = list(piv.columns)
    width = max([len(s) for s in piv.index] + [26])
    out = out + [f"  {'Max_SSIM (mean over seeds)':{width}s}" + "".join(f" {lab[:14]:>14s}" for lab in labels)]
    for s, row in itertools.islice(piv.iterrows(), max_rows):
        out.append(f"  {s:{width}s}" + "".join(f" {row[lab]:14.3f}" if row[lab] == row[lab] else f" {'-':>14s}"
                                               for lab in labels))
    if len(piv) > max_rows:
        out.append(f"  ... {len(piv) - max_rows} more settings in results.csv")
    return out


def check_sweep_dir(out_dir) -> Path:
    """--out for a sweep: a new or empty folder, or one that already holds a sweep (to resume)."""
    out = check_out_dir(out_dir)
    if out.is_dir() and any(out.iterdir()) and not is_sweep_dir(out):
        raise HidebenchError(f"{out} holds other files and no {MANIFEST}; give a new folder or the folder of a sweep "
                             "to resume")
    if is_sweep_dir(out):
        read_manifest(out)
    return out


def run_sweep(sweep, out_dir, *, workers: int = 1, threads: int | None = None, backend: str = "local",
              address: str | None = None, retry_failed: bool = False, fresh_workers: bool = False, ctx=None,
              progress: bool = True, echo=print) -> SweepSummary:
    """Run (or resume) a sweep into out_dir: every planned run not finished yet (and the failed
    ones with retry_failed), each (cell, seed) challenge generated once; results.csv rebuilt at
    the end. workers: processes (local) or concurrent tasks on a local Ray; 0 runs in this
    process. threads: per run (default: this machine's cores / workers). Worker processes are
    kept between runs (on Linux each run's peak memory is its own: the kernel's peak mark is
    reset before it); fresh_workers starts a new process for every run instead, isolating runs
    completely for a few seconds of start-up each. ctx: the base
    execution context (device, data root, model cache) each task gets a copy of, with its own
    threads, cache folder (RUN/cache) and attack seed; None: ExecutionContext.from_env().
    echo: where progress lines and the summary go (None: nowhere)."""
    from hidebench.context import ExecutionContext
    from hidebench.progress import bar

    echo = echo or (lambda *a, **k: None)
    sw = sweep_from_dict(sweep, run_imports=True) if isinstance(sweep, dict) else load_sweep(sweep, run_imports=True)
    if backend not in BACKENDS:
        raise HidebenchError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address and backend != "ray":
        raise HidebenchError("--address names a Ray cluster: use it with --backend ray")
    check_int(workers, "--workers", min=0, max=MAX_WORKERS)
    if backend == "ray" and workers == 0:
        raise HidebenchError("--workers 0 (in this process) is for the local backend")
    threads = threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
    check_int(threads, "--threads", min=1, max=MAX_THREADS)
    out = check_sweep_dir(out_dir).resolve()
    ctx = ctx or ExecutionContext.from_env()
    plan = make_plan(sw, out, data_root=ctx.data_root, strict=True)
    runs = plan["runs"]
    summary = SweepSummary(out=out, name=sw.name, backend=backend, workers=workers, threads=threads, total=len(runs),
                           skipped_cells=[(cell_label(s["cell"]), s["reason"]) for s in plan["skipped_cells"]])
    todo = []
    for r in runs:
        state, st = run_state(out, r)
        if state == "skipped":
            summary.skipped_runs += 1
        elif state == "done":
            summary.reused += 1
            summary.done += 1
        elif state == "failed" and not retry_failed:
            summary.failed.append((r["run_id"], st.get("error", "")))
        else:
            todo.append(r)
    pool = (_RayBackend(workers, threads, address, fresh_workers) if backend == "ray"
            else _LocalBackend(workers, fresh_workers))

    # Nothing was written before this point: a bad sweep file, --out or backend changes nothing.
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, {"format": FORMAT, "sweep": sw.to_dict(), "base_recipe": sw.base, "source": sw.source,
                                "runs": runs, "skipped_cells": plan["skipped_cells"], "written": _now(),
                                "invocation": {"backend": backend, "address": address, "workers": workers,
                                               "threads": threads, "fresh_workers": fresh_workers,
                                               "host": socket.gethostname()}})
    chal = {c["dir"]: c for c in plan["challenges"]}
    waiting: dict[str, list] = {}
    for r in todo:
        d = out / r["run_dir"]
        st = _read_json(d / RUN_STATUS)
        if d.exists() and (st is None or st.get("input_hash") != r["input_hash"]):
            shutil.rmtree(d)                     # another input's run (or debris): start clean
        waiting.setdefault(r["challenge"], []).append(r)
    ready: deque = deque(waiting.pop(None, []))         # utility runs need no challenge
    gen_queue = deque(chal[c] for c in waiting)
    inflight: dict = {}
    imports = sw.imports

    def ctx_for(r):
        return ctx.replace(threads=threads, cache_dir=str(out / r["run_dir"] / "cache"), progress=False,
                           seed=r["attack_seed"]).to_dict()

    def run_task(r):
        if r["attack"] == "utility":
            return {"run_id": r["run_id"], "run_dir": str(out / r["run_dir"]), "utility": r["utility"],
                    "input_hash": r["input_hash"], "attack": "utility", "context": ctx_for(r)}
        a = next(a for a in sw.attacks if a["label"] == r["label"])
        return {"run_id": r["run_id"], "run_dir": str(out / r["run_dir"]), "challenge": str(out / r["challenge"]),
                "attack": a["name"], "config": a["config"], "threat": a["threat"], "input_hash": r["input_hash"],
                "context": ctx_for(r), "imports": imports}

    def gen_task(c):
        return {"dir": str(out / c["dir"]), "recipe": c["recipe"], "seed": c["seed"], "data_root": ctx.data_root,
                "threads": threads, "imports": imports}

    settled = summary.reused + summary.skipped_runs + len(summary.failed)
    pbar = bar(total=len(runs), initial=settled, enabled=progress, desc=f"sweep {sw.name}", unit="run", smoothing=0.1)
    show_lines = progress and pbar.disable
    t_start, last_csv = time.perf_counter(), time.perf_counter()

    def note(text):
        if show_lines:
            echo(text)
        elif progress and not pbar.disable and "failed" in text:
            pbar.write(text)

    def postfix(refresh=True):
        pbar.set_postfix_str(f"done {summary.done} failed {len(summary.failed)} skipped {summary.skipped_runs} "
                             f"running {sum(1 for k, _ in inflight.values() if k == 'run')}", refresh=refresh)

    def finish_run(r, result):
        summary.executed.append(r["run_id"])
        if result.get("status") == "done":
            summary.done += 1
            summary.run_wall_s.append(result.get("wall_s", 0.0))
            m = result.get("metrics", {})
            score = (f"test accuracy {m.get('test_accuracy_clean', float('nan')):.3f}" if r["attack"] == "utility"
                     else f"Max_SSIM {m.get('Max_SSIM', float('nan')):.3f}")
            note(f"[{summary.done + len(summary.failed) + summary.skipped_runs}/{len(runs)}] done {r['run_id']}: "
                 f"{score} ({result.get('wall_s', 0):.1f} s)")
        else:
            summary.failed.append((r["run_id"], result.get("error", "")))
            note(f"failed {r['run_id']}: {result.get('error', '')}")
        postfix(refresh=False)
        pbar.update(1)

    try:
        postfix()
        while gen_queue or ready or inflight:
            while (pool.capacity is None or len(inflight) < pool.capacity) and (ready or gen_queue):
                if ready:
                    r = ready.popleft()
                    inflight[pool.submit(execute_utility if r["attack"] == "utility" else execute_run,
                                         run_task(r))] = ("run", r)
                else:
                    c = gen_queue.popleft()
                    inflight[pool.submit(execute_challenge, gen_task(c))] = ("challenge", c)
                postfix()
            for h in pool.wait(list(inflight), timeout=1.0):
                if h not in inflight:            # settled with a crashed pool below
                    continue
                kind, obj = inflight.pop(h)
                try:
                    result = pool.result(h)
                except Exception as e:
                    crashed = pool.crashed(e)
                    err = ("the worker process died (killed, or out of memory) while this ran" if crashed
                           else _one_line(e))
                    result = {"ok": False, "status": "failed", "error": err}
                    if crashed:
                        for h2, (k2, o2) in list(inflight.items()):     # the whole pool went down with it
                            inflight.pop(h2)
                            if k2 == "run":
                                finish_run(o2, _write_failed(out / o2["run_dir"], run_task(o2), err))
                            else:
                                gen_queue.appendleft(o2)
                        pool.restart()
                    if kind == "run":
                        result = _write_failed(out / obj["run_dir"], run_task(obj), err)
                if kind == "challenge":
                    deps = waiting.pop(obj["dir"], [])
                    if result.get("ok"):
                        ready.extend(deps)
                    else:
                        err = f"challenge generation failed: {result.get('error')}"
                        for r in deps:
                            finish_run(r, _write_failed(out / r["run_dir"], run_task(r), err))
                else:
                    finish_run(obj, result)
                postfix()
            if time.perf_counter() - last_csv > 10:
                write_results(out)
                last_csv = time.perf_counter()
    except BaseException as e:          # Ctrl-C (or a bug): stop the workers; runs in flight are redone next time
        summary.interrupted = isinstance(e, KeyboardInterrupt)
        pool.close(list(inflight), cancel=True)
        pool = None
        raise
    finally:
        pbar.close()
        if pool is not None:
            pool.close()
        summary.wall_s = time.perf_counter() - t_start
        write_results(out)
        echo(summary.text(results_table(out), grid_keys=list(sw.grid)))
    return summary


def plan_lines(sweep, out_dir=None, *, data_root=None) -> list[str]:
    """`hidebench sweep --list`: every cell and run with its status in out_dir (nothing runs or is written)."""
    sw = load_sweep(sweep)
    out = Path(out_dir) if out_dir is not None and is_sweep_dir(out_dir) else None
    plan = make_plan(sw, out, data_root=data_root, strict=False)
    lines = [f"sweep {sw.name}: recipe {sw.recipe}, {_count(sw)}" + (f"; {sw.description}" if sw.description else "")]
    unchecked = [a["label"] for a in sw.attacks if a.get("unchecked")]
    if unchecked:
        lines.append(f"not checked: {', '.join(unchecked)} (registered by the sweep's imports {sw.imports}, which are "
                     "code and run only when the sweep runs)")
    lines.append("attacks: " + "; ".join(f"{a['label']} ({a['name']}, seed {a['seed']}"
                                         + (f", config {json.dumps(a['given']['config'])}" if a["given"]["config"] else "")
                                         + (f", threat {json.dumps(a['given']['threat'])}" if a["given"]["threat"] else "")
                                         + ")" for a in sw.attacks))
    counts: dict[str, int] = {}
    by_cell: dict[str, list] = {}
    for r in plan["runs"]:
        state = run_state(out, r)[0] if out is not None else ("skipped" if r["status"] == "skipped" else "pending")
        counts[state] = counts.get(state, 0) + 1
        by_cell.setdefault(r["cell_id"], []).append((r, state))
    for entries in by_cell.values():
        r0 = entries[0][0]
        s = r0["setting"]
        head = f"  {cell_label(r0['cell'])}  [{s['scheme']} {s['mode']} k={s['k']} T={s['T']} n_priv={s['n_priv']}]"
        if r0["attack"] == "utility":
            head = "  utility (training runs): " + ", ".join(r["run_id"].split("/", 1)[1] for r, _ in entries)
        if r0["status"] == "skipped":
            lines.append(f"{head}: skipped: {r0['reason']}")
            continue
        states: dict[str, int] = {}
        for _, st in entries:
            states[st] = states.get(st, 0) + 1
        lines.append(f"{head}: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items())))
    lines.append("total: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return lines


def sweep_overview(name: str) -> str:
    """One line for `hidebench list`."""
    sw = load_sweep(name)
    return f"{sw.description} [{_count(sw)}]"


def _count(sw: Sweep) -> str:
    def n(k, what):
        return f"{k} {what}{'' if k == 1 else 's'}"

    utility = f" + {n(len(_utility_runs(sw)), 'utility run')}" if sw.utility is not None else ""
    return (f"{n(sw.n_cells, 'cell')} x {n(len(sw.seeds), 'seed')} x {n(len(sw.attacks), 'attack')} = "
            f"{n(sw.n_runs, 'run')}{utility}")


__all__ = ["Sweep", "SweepSummary", "builtin_sweeps", "execute_challenge", "execute_run", "is_sweep_dir", "load_sweep",
           "make_plan", "plan_lines", "results_table", "run_state", "run_sweep", "sweep_from_dict", "write_results"]

