"""The sweep file: one TOML file names a base recipe, the challenge seeds, a grid of recipe
parameters and the attacks to run on every cell (the format is in hidebench.app.sweep's
docstring). This module reads and validates it into a `Sweep`; it runs nothing, and imports the
file's `imports` (code) only when asked to, i.e. when the sweep runs.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.config import Config, check_int
from hidebench.recipes import OVERRIDES, Recipe, challenge_data, load_recipe, recipe_from_dict
from hidebench.types import HidebenchError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")     # sweep names and attack labels (folder names)


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
        if self.label is not None and not NAME.match(self.label):
            raise HidebenchError(f"{self.section}.label must be letters, digits and _ . + - (a folder name), "
                                 f"got {self.label!r}")
        check_int(self.seed, f"{self.section}.seed", min=0)
        for what in ("config", "threat"):
            if not isinstance(getattr(self, what), dict):
                raise HidebenchError(f"{self.section}.{what} must be a table, got {getattr(self, what)!r}")


@dataclass
class SweepSpec(Config):
    """The keys of a sweep file (see hidebench.app.sweep's docstring)."""

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

    def cell_dict(self, cell: dict) -> dict:
        """The base recipe as a dict with a cell's values put in (not validated)."""
        d = json.loads(json.dumps(self.base))
        for key, value in cell.items():
            section, name, _ = grid_target(key)
            d[section][name] = value
        return d

    def cell_recipe(self, cell: dict) -> Recipe:
        """A cell's recipe; a HidebenchError says why the cell's values make no valid recipe."""
        return recipe_from_dict(self.cell_dict(cell))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "recipe": self.recipe, "seeds": self.seeds,
                "grid": self.grid, "grid_keys": list(self.grid), "attack": self.attacks, "imports": self.imports,
                "utility": self.utility}


def _recipe_sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Recipe)
            if f.default_factory is not dataclasses.MISSING}


def grid_target(key: str) -> tuple[str, str, str]:
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
    from hidebench.attacks.base import get_attack

    if not isinstance(d, dict):
        raise HidebenchError(f"sweep {name} must be a table of keys")
    try:
        spec = SweepSpec.from_dict(d)
    except HidebenchError as e:
        raise HidebenchError(f"sweep {name}: {e}") from None
    name = spec.name or name
    if not NAME.match(name):
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
    seeds = spec.seeds
    if seeds is None:
        if base_recipe.seed is None:
            raise HidebenchError(f"sweep {name}: give the challenge-generation seeds, e.g. seeds = [1, 2] "
                                 f"(recipe {base_recipe.name} has no fixed seed)")
        seeds = [base_recipe.seed]
    return Sweep(name=name, description=spec.description, recipe=spec.recipe, base=base_recipe.to_dict(),
                 seeds=list(seeds), grid=_check_grid(spec.grid, name), attacks=_check_attacks(spec, name, run_imports),
                 imports=list(spec.imports), source=source or {}, utility=_check_utility(spec.utility, name), spec=d,
                 base_dir=base_dir)


def _check_grid(given: dict, name: str) -> dict[str, list]:
    grid = {}
    for key, values in _flatten_grid(given).items():
        if key == "seed":
            raise HidebenchError(f"sweep {name}: grid.seed: list the challenge seeds in `seeds = [...]`")
        _, _, annotation = grid_target(key)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise HidebenchError(f"sweep {name}: grid.{key} lists no values")
        for v in values:
            if isinstance(v, (list, dict)) or not _value_ok(v, annotation):
                raise HidebenchError(f"sweep {name}: grid.{key} values must be of type {annotation}, got {v!r}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise HidebenchError(f"sweep {name}: grid.{key} repeats a value: {values}")
        grid[key] = values
    return grid


def _check_attacks(spec: SweepSpec, name: str, run_imports: bool) -> list[dict]:
    """The [[attack]] entries, each validated by its attack (config and threat model filled in),
    or kept unchecked when the sweep's imports, not run yet, may register it."""
    from hidebench.attacks.base import ATTACKS, ReleaseAttack, get_attack
    from hidebench.threat import ReleaseThreatModel

    attacks, labels = [], set()
    for i, entry in enumerate(spec.attack):
        where = f"attack[{i}]"
        try:
            a = SweepAttack.from_dict(entry, where=where)
        except HidebenchError as e:
            raise HidebenchError(f"sweep {name}: {e}") from None
        label = a.label or a.name
        given = {"config": a.config, "threat": a.threat}
        unchecked = bool(a.name not in ATTACKS and spec.imports and not run_imports)
        cls = None if unchecked else get_attack(a.name)
        if cls is not None and not issubclass(cls, ReleaseAttack):
            raise HidebenchError(f"sweep {name}: {where}: {a.name} attacks a federated update; sweeps run release "
                                 "attacks on the challenges they generate")
        if label in labels:
            raise HidebenchError(f"sweep {name}: two [[attack]] entries are labelled {label!r}; give each its own "
                                 "`label`")
        labels.add(label)
        if unchecked:
            attacks.append({"label": label, "name": a.name, "config": a.config, "threat": a.threat, "seed": a.seed,
                            "given": given, "unchecked": True})
            continue
        try:
            threat = ReleaseThreatModel.from_dict(a.threat)
            attack = cls(a.config, threat)
        except HidebenchError as e:
            raise HidebenchError(f"sweep {name}: {where} ({label}): {e}") from None
        attacks.append({"label": label, "name": a.name, "config": attack.config.to_dict(),
                        "threat": json.loads(json.dumps(dataclasses.asdict(threat))), "seed": a.seed, "given": given})
    return attacks


def _check_utility(given: dict | None, name: str) -> dict | None:
    """[utility]: the full utility config and whether to train the vanilla reference."""
    if given is None:
        return None
    from hidebench.defenses.utility.config import UtilityConfig

    if not isinstance(given, dict):
        raise HidebenchError(f"sweep {name}: [utility] must be a table, got {given!r}")
    given = dict(given)
    vanilla = given.pop("vanilla", True)
    if not isinstance(vanilla, bool):
        raise HidebenchError(f"sweep {name}: utility.vanilla must be true or false, got {vanilla!r}")
    try:
        return {"config": UtilityConfig.from_dict(given).to_dict(), "vanilla": vanilla}
    except HidebenchError as e:
        raise HidebenchError(f"sweep {name}: {e}" + (" (and vanilla)" if "valid keys" in str(e) else "")) from None


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
