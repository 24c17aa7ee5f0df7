"""The plan of a sweep: every (cell, seed) challenge to generate and every run to do, typed
(`ChallengeSpec`, `RunSpec` for an attack on a challenge, `UtilityRunSpec` for a training run),
each with its folder and input hash; the cells a recipe rejects, with the reason; and the state
of each run in a sweep folder (`run_state`). Folders of an earlier plan are reused when their
inputs match, so a changed sweep file redoes only what changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from hidebench.app.sweep_file import Sweep
from hidebench.recipes import Recipe
from hidebench.types import HidebenchError, one_line

RUN_STATUS = "sweep_run.json"


@dataclass
class Setting:
    """What a run's figures are about: the defense setting and its data (raw values when the
    cell's recipe is infeasible). A training run has no T or n_priv: it encrypts its training
    images afresh every epoch, `epochs` times."""

    scheme: str | None
    mode: str | None
    k: int | None
    T: int | None
    n_priv: int | None
    n_encryptions: int | None
    recipe: str | None
    private_source: str | None
    epochs: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Setting:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})


@dataclass
class ChallengeSpec:
    """One (cell, seed) challenge, generated once and shared by every attack on the cell."""

    dir: str                         # relative to the sweep folder
    recipe: dict                     # the cell's recipe with its seed
    seed: int
    hash: str                        # of the recipe: part of every run's input hash


@dataclass
class RunSpec:
    """One attack (an [[attack]] entry) on one (cell, seed) challenge."""

    kind: ClassVar[str] = "attack"
    run_id: str                      # CELL/seed=S/LABEL
    cell: dict                       # grid key -> value
    cell_id: str
    seed: int                        # the challenge-generation seed
    label: str
    attack: str                      # the registered attack
    attack_seed: int
    oracles: list[str]
    aux: str | None
    public_pool: bool | None
    challenge: str                   # the challenge folder, relative to the sweep folder
    run_dir: str                     # relative to the sweep folder
    setting: Setting
    status: str = "planned"          # planned, or skipped (an infeasible cell)
    reason: str | None = None        # why skipped
    input_hash: str | None = None    # of everything the run's outcome depends on (None: skipped)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass
class UtilityRunSpec:
    """One training run (hidebench.app.utility) of a defense setting, shared by the cells that
    differ only in n_priv, T or the private images; or the vanilla reference."""

    kind: ClassVar[str] = "utility"
    run_id: str                      # utility/SETTING
    cell: dict                       # the first cell with this setting (its recipe is trained on)
    run_dir: str
    setting: Setting                 # T and n_priv None, epochs from the config
    recipe: dict                     # the cell's recipe, without its seed
    config: dict                     # the full utility config
    vanilla: bool
    seed: int = 0                    # of initialisation, shuffles and encryptions
    status: str = "planned"
    reason: str | None = None
    input_hash: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {"kind": self.kind, **{k: d.pop(k) for k in ("run_id", "cell", "run_dir", "setting", "seed")},
                "utility": {k: d.pop(k) for k in ("recipe", "config", "vanilla")}, **d}


@dataclass
class Plan:
    """What a sweep does: its runs, the challenges they need, and the cells it cannot run."""

    runs: list = field(default_factory=list)            # RunSpec and UtilityRunSpec, in order
    skipped_cells: list = field(default_factory=list)   # {"cell", "cell_id", "reason"} of infeasible cells
    challenges: list = field(default_factory=list)      # ChallengeSpec of the feasible (cell, seed)s


# The JSON types of the fields a planned run must have in sweep.json, per kind.
_FIELDS = {"attack": {"run_id": str, "attack": str, "label": str, "run_dir": str, "cell": dict, "setting": dict,
                      "oracles": list, "status": str},
           "utility": {"run_id": str, "run_dir": str, "cell": dict, "setting": dict, "status": str, "utility": dict}}


def run_from_dict(d) -> RunSpec | UtilityRunSpec | None:
    """A planned run as read back from sweep.json; None if it lacks a field or has one of the
    wrong type. An entry without a `kind` is an attack run unless its attack is 'utility': then
    it is a training run, whose setting's T holds its epochs."""
    if not isinstance(d, dict):
        return None
    kind = d.get("kind") or ("utility" if d.get("attack") == "utility" else "attack")
    if kind not in _FIELDS or not all(isinstance(d.get(k), t) for k, t in _FIELDS[kind].items()):
        return None
    setting = Setting.from_dict(d["setting"])
    common = {"run_id": d["run_id"], "cell": d["cell"], "run_dir": d["run_dir"], "setting": setting,
              "status": d["status"], "reason": d.get("reason"), "input_hash": d.get("input_hash")}
    if kind == "attack":
        return RunSpec(**common, cell_id=d.get("cell_id") or cell_id(d["cell"]), seed=d.get("seed"),
                       label=d["label"], attack=d["attack"], attack_seed=d.get("attack_seed"), oracles=d["oracles"],
                       aux=d.get("aux"), public_pool=d.get("public_pool"), challenge=d.get("challenge"))
    u = d["utility"]
    if "epochs" not in d["setting"]:
        setting.T, setting.epochs = None, setting.T
    return UtilityRunSpec(**common, recipe=u.get("recipe"), config=u.get("config"), vanilla=u.get("vanilla"),
                          seed=d.get("seed") or 0)


def digest(obj) -> str:
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


def _setting(sweep: Sweep, cell: dict, recipe: Recipe | None) -> Setting:
    """The setting of a cell: from its recipe, or its raw values when the recipe is infeasible."""
    if recipe is not None:
        s, p = recipe.scheme, recipe.private
        return Setting(scheme=s.scheme, mode=s.mode, k=s.k, T=s.T, n_priv=p.n_priv, n_encryptions=p.n_priv * s.T,
                       recipe=recipe.name, private_source=p.source)
    d = sweep.cell_dict(cell)
    s, p = d["scheme"], d["private"]
    n_enc = p["n_priv"] * s["T"] if all(isinstance(x, int) for x in (p["n_priv"], s["T"])) else None
    return Setting(scheme=s["scheme"], mode=s["mode"], k=s["k"], T=s["T"], n_priv=p["n_priv"], n_encryptions=n_enc,
                   recipe=d["name"], private_source=p["source"])


def make_plan(sweep: Sweep, out_dir=None, *, data_root=None, strict: bool = True) -> Plan:
    """Every (cell, seed, attack) run with its folders and input hash; infeasible cells skipped
    with the reason. strict: a private source that cannot be sized (no data root) is an error;
    otherwise its cells are listed unchecked. Reuses run folders of `out_dir` whose inputs match."""
    out = Path(out_dir) if out_dir is not None else None
    sizes: dict = {}
    plan, challenges = Plan(), {}
    for cell in sweep.cells():
        cid = cell_id(cell)
        try:
            recipe = sweep.cell_recipe(cell)
            reason = _feasibility(recipe, data_root, sizes, strict)
        except _SourceError:
            raise
        except HidebenchError as e:
            recipe, reason = None, str(e)
        if reason:
            plan.skipped_cells.append({"cell": cell, "cell_id": cid, "reason": reason})
        setting = _setting(sweep, cell, recipe)
        for seed in sweep.seeds:
            ch_dir = f"challenges/{cid}/seed={seed}"
            if not reason:
                rdict = dataclasses.replace(recipe, seed=seed).to_dict()
                challenges[ch_dir] = ChallengeSpec(dir=ch_dir, recipe=rdict, seed=seed, hash=digest(rdict))
            for a in sweep.attacks:
                run = RunSpec(run_id=f"{cid}/seed={seed}/{a['label']}", cell=cell, cell_id=cid, seed=seed,
                              label=a["label"], attack=a["name"], attack_seed=a["seed"],
                              oracles=list(a["threat"].get("oracles") or []), aux=a["threat"].get("aux"),
                              public_pool=a["threat"].get("public_pool"), challenge=ch_dir,
                              run_dir=f"runs/{cid}/seed={seed}/{a['label']}", setting=setting)
                if reason:
                    run.status, run.reason = "skipped", reason
                else:
                    run.input_hash = digest({"challenge": challenges[ch_dir].hash, "attack": a["name"],
                                             "config": a["config"], "threat": a["threat"], "seed": a["seed"]})
                plan.runs.append(run)
    if sweep.utility is not None:
        plan.runs += utility_runs(sweep)
    plan.challenges = list(challenges.values())
    if out is not None:
        _reuse_challenges(out, plan)
        _reuse_folders(out, plan.runs)
    return plan


def utility_runs(sweep: Sweep) -> list[UtilityRunSpec]:
    """One training run per distinct defense setting of the feasible cells (cells that differ only
    in n_priv, T or the private images share it), and the vanilla reference."""
    from hidebench.app.utility import utility_setting
    from hidebench.defenses.utility.config import UtilityConfig

    cfg = UtilityConfig.from_dict(sweep.utility["config"])
    cells = []
    for cell in sweep.cells():
        try:
            cells.append((cell, sweep.cell_recipe(cell)))
        except HidebenchError:          # an invalid recipe: its attack runs say why
            continue
    todo = [(cell, r, False) for cell, r in cells]
    if sweep.utility["vanilla"] and cells:
        todo.insert(0, (cells[0][0], cells[0][1], True))
    runs, seen = [], set()
    for cell, recipe, vanilla in todo:
        try:
            defense, reason = utility_setting(recipe, cfg, vanilla), None
        except HidebenchError as e:
            defense, reason = None, str(e)
        rid = "vanilla" if vanilla else (f"{defense['scheme']}-{defense['mode']}-k{defense['k']}-{digest(defense)[:8]}"
                                         if defense else cell_id(cell))
        if rid in seen:
            continue
        seen.add(rid)
        d = defense or {}
        run = UtilityRunSpec(run_id=f"utility/{rid}", cell=cell, run_dir=f"utility/{rid}",
                             setting=Setting(scheme=d.get("scheme"), mode=d.get("mode"), k=d.get("k"), T=None,
                                             n_priv=None, n_encryptions=None, recipe=recipe.name,
                                             private_source=d.get("train"), epochs=cfg.epochs),
                             recipe=recipe.to_dict(with_seed=False), config=sweep.utility["config"], vanilla=vanilla)
        if reason:
            run.status, run.reason = "skipped", reason
        else:
            run.input_hash = digest({"utility": defense, "config": run.config, "seed": run.seed})
        runs.append(run)
    return runs


def _reuse_challenges(out: Path, plan: Plan) -> None:
    """Point a planned challenge (and its runs) at an existing challenge folder holding the same
    recipe and seed when its own folder does not, and no planned challenge owns that folder."""
    if not (out / "challenges").is_dir():
        return
    missing = [c for c in plan.challenges if not challenge_matches(out / c.dir, c.recipe, c.seed)]
    if not missing:
        return
    owned = {c.dir for c in plan.challenges}
    others = [p for p in sorted((out / "challenges").glob("*/*"))
              if p.is_dir() and p.relative_to(out).as_posix() not in owned]
    for c in missing:
        match = next((p for p in others if challenge_matches(p, c.recipe, c.seed)), None)
        if match is None:
            continue
        others.remove(match)
        old, c.dir = c.dir, match.relative_to(out).as_posix()
        for r in plan.runs:
            if isinstance(r, RunSpec) and r.challenge == old:
                r.challenge = c.dir


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None if it is missing, unreadable or not an object."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) else None


def _reuse_folders(out: Path, runs: list) -> None:
    """Point a planned run at an existing finished run folder with the same input hash when its
    own folder does not hold one (e.g. after a grid key was added) and no planned run owns that folder."""
    todo = [r for r in runs if r.status == "planned" and run_state(out, r)[0] != "done"]
    if not todo or not (out / "runs").is_dir():
        return
    owned = {r.run_dir for r in runs}
    done = {}
    for st_path in (out / "runs").rglob(RUN_STATUS):
        rel = st_path.parent.relative_to(out).as_posix()
        st = read_json(st_path)
        if rel not in owned and st and st.get("status") == "done" and (st_path.parent / "record.json").is_file():
            done.setdefault(st.get("input_hash"), rel)
    for r in todo:
        if r.input_hash in done:
            r.run_dir = done.pop(r.input_hash)


def run_state(out: Path, run: RunSpec | UtilityRunSpec) -> tuple[str, dict]:
    """(status, sweep_run.json) of a planned run in `out`: done, failed, started (running now or
    interrupted), pending (never run, or run with other inputs), or skipped. A sweep_run.json or
    record.json that cannot be read counts as failed: the run's outcome is unknown."""
    if run.status == "skipped":
        return "skipped", {}
    d = Path(out) / run.run_dir
    st = read_json(d / RUN_STATUS)
    if st is None:
        if (d / RUN_STATUS).exists():          # written by a run, then damaged: the run's outcome is unknown
            return "failed", {"error": f"{RUN_STATUS} is unreadable (rerun with --retry-failed)"}
        return "pending", {}
    if st.get("input_hash") != run.input_hash:
        return "pending", {}
    status = st.get("status")
    if status == "done" and (d / "record.json").is_file():
        from hidebench.record import load_record

        try:
            load_record(d / "record.json")
        except HidebenchError as e:
            return "failed", {**st, "error": f"{one_line(e)} (rerun with --retry-failed)"}
        return "done", st
    if status in ("failed", "started"):
        return status, st
    return "pending", st


def challenge_matches(ch_dir: Path, recipe: dict, seed: int) -> bool:
    """Whether a challenge folder holds the generation of `recipe` at `seed`."""
    from hidebench.challenge_io import read_seed

    m = read_json(ch_dir / "manifest.json")
    if not m or not (ch_dir / "key" / "manifest.json").is_file() or not (ch_dir / "key" / "seed").is_file():
        return False
    want = {k: v for k, v in recipe.items() if k != "seed"}
    try:
        return digest(m.get("recipe")) == digest(want) and read_seed(ch_dir / "key" / "seed") == seed
    except HidebenchError:
        return False
