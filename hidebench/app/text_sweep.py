"""Sweeps over TextHide releases (`hidebench sweep texthide-km --out DIR`).

The sweep file is the image sweeps' (hidebench.app.sweep: name, description, recipe, seeds,
[grid], [[attack]], [utility], validated by the same SweepSpec and SweepAttack), naming a TextHide
recipe; grid keys are the TextHide recipe's flat overrides (k, m, T, n_priv, mode, c1, pooling,
private_source, public_source, candidates) or SECTION.KEY. `hidebench sweep` hands a sweep whose
recipe is a TextHide recipe to this module, which runs it in this process, one run after another
(the image sweeps' worker pool, Ray backend and HTML report are built around image releases and
are not used; a text run takes seconds to minutes on one core):

    DIR/text_sweep.json                  the validated sweep and its plan
    DIR/challenges/CELL/seed=S/          one TextHide release per (cell, seed)
    DIR/cache/CELL/seed=S/               the stage cache the attacks on that release share
    DIR/runs/CELL/seed=S/LABEL/          the harness's outputs (record.json, gallery.md, ...) and run.json
    DIR/utility/SETTING/                 with [utility]: one training run per defense setting, and vanilla
    DIR/results.csv, results.md, frontier.png   rebuilt from the records after every run

A run is done when its run.json says so for the same inputs (release recipe and seed, attack,
config, threat model, attack seed) and its record.json exists; rerunning the command resumes,
and failed runs are redone with --retry-failed.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.app.sweep_file import SweepAttack, SweepSpec, sweeps_dir
from hidebench.app.sweep_plan import cell_id, challenge_matches
from hidebench.challenge_io import check_out_dir, write_bytes, write_json
from hidebench.context import ExecutionContext
from hidebench.recipes import read_recipe_dict, recipe_kind
from hidebench.text.recipe import TEXT_OVERRIDES, TEXT_SECTIONS, text_recipe_from_dict
from hidebench.types import HidebenchError

FORMAT = "hidebench-text-sweep/1"
RUN_STATUS = "run.json"


@dataclass
class TextSweep:
    name: str
    description: str
    base: dict                       # the base recipe, every section filled in
    seeds: list[int]
    grid: dict[str, list]
    attacks: list[dict]              # label, name, config (full), threat (as given), seed
    utility: dict | None = None      # {"config": full TextUtilityConfig dict, "vanilla": bool}
    source: dict = field(default_factory=dict)

    def cells(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]


def _read_sweep_file(name_or_path) -> tuple[dict, str, Path | None, str]:
    import tomllib

    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise HidebenchError(f"sweep file {p} does not exist")
        text, base_dir, name = p.read_text(errors="replace"), p.resolve().parent, p.stem
    else:
        res = sweeps_dir() / f"{name_or_path}.toml"
        if not res.is_file():
            raise HidebenchError(f"unknown sweep {str(name_or_path)!r}")
        text, base_dir, name = res.read_text(), None, str(name_or_path)
    try:
        return tomllib.loads(text), text, base_dir, name
    except tomllib.TOMLDecodeError as e:
        raise HidebenchError(f"sweep {name}: invalid TOML: {e}") from None


def _recipe_ref(ref: str, base_dir: Path | None) -> str:
    p = Path(ref).expanduser()
    if (p.suffix == ".toml" or len(p.parts) > 1) and not p.is_absolute() and base_dir is not None:
        return str(base_dir / p)
    return ref


def is_text_sweep(name_or_path) -> bool:
    """Whether a sweep (stock name or file) names a TextHide recipe (False when it cannot be read:
    the image sweep's loader then says why)."""
    try:
        d, _, base_dir, _ = _read_sweep_file(name_or_path)
        ref = d.get("recipe")
        return isinstance(ref, str) and recipe_kind(read_recipe_dict(_recipe_ref(ref, base_dir))) == "text"
    except HidebenchError:
        return False


def _grid_target(key: str) -> tuple[str, str]:
    if key in TEXT_OVERRIDES:
        return TEXT_OVERRIDES[key]
    section, _, name = key.partition(".")
    cls = TEXT_SECTIONS.get(section)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        raise HidebenchError(f"unknown grid key grid.{key}; valid: {', '.join(sorted(TEXT_OVERRIDES))}, or SECTION.KEY "
                             f"of [{'], ['.join(TEXT_SECTIONS)}]")
    return section, name


def load_text_sweep(name_or_path) -> TextSweep:
    """A TextHide sweep by stock name or path, validated (errors name the key)."""
    from hidebench.attacks.base import get_attack
    from hidebench.defenses.texthide_utility import TextUtilityConfig
    from hidebench.text.recipe import load_text_recipe
    from hidebench.text.threat import TextThreatModel

    d, text, base_dir, name = _read_sweep_file(name_or_path)
    try:
        spec = SweepSpec.from_dict(d)
    except HidebenchError as e:
        raise HidebenchError(f"sweep {name}: {e}") from None
    name = spec.name or name
    if spec.imports:
        raise HidebenchError(f"sweep {name}: imports are not supported by TextHide sweeps")
    base_recipe = load_text_recipe(_recipe_ref(spec.recipe, base_dir))
    seeds = spec.seeds or ([base_recipe.seed] if base_recipe.seed is not None else None)
    if not seeds:
        raise HidebenchError(f"sweep {name}: give the release seeds, e.g. seeds = [1] (recipe {base_recipe.name} has "
                             "no fixed seed)")
    grid = {}
    for key, values in spec.grid.items():
        _grid_target(key)
        grid[key] = values if isinstance(values, list) else [values]
        if not grid[key] or len({json.dumps(v) for v in grid[key]}) != len(grid[key]):
            raise HidebenchError(f"sweep {name}: grid.{key} must list distinct values, got {grid[key]}")
    attacks, labels = [], set()
    for i, entry in enumerate(spec.attack):
        a = SweepAttack.from_dict(entry, where=f"attack[{i}]")
        cls = get_attack(a.name)
        if getattr(cls, "modality", None) != "text":
            raise HidebenchError(f"sweep {name}: attack[{i}]: {a.name} does not attack TextHide releases")
        label = a.label or a.name
        if label in labels:
            raise HidebenchError(f"sweep {name}: two [[attack]] entries are labelled {label!r}; give each its own `label`")
        labels.add(label)
        attack = cls(a.config, TextThreatModel.from_dict(a.threat))
        attacks.append({"label": label, "name": a.name, "config": attack.config.to_dict(), "threat": a.threat,
                        "seed": a.seed})
    utility = None
    if spec.utility is not None:
        given = dict(spec.utility)
        vanilla = given.pop("vanilla", True)
        utility = {"config": TextUtilityConfig.from_dict(given).to_dict(), "vanilla": bool(vanilla)}
    sw = TextSweep(name=name, description=spec.description, base=base_recipe.to_dict(), seeds=list(seeds), grid=grid,
                   attacks=attacks, utility=utility, source={"text": text})
    for cell in sw.cells():                     # every cell's recipe must validate before anything runs
        cell_recipe(sw, cell)
    return sw


def cell_recipe(sweep: TextSweep, cell: dict):
    d = json.loads(json.dumps(sweep.base))
    for key, value in cell.items():
        section, name = _grid_target(key)
        d[section][name] = value
    try:
        return text_recipe_from_dict(d)
    except HidebenchError as e:
        raise HidebenchError(f"sweep {sweep.name}: cell {cell}: {e}") from None


def text_sweep_overview(name) -> str:
    sw = load_text_sweep(name)
    n_cells = len(sw.cells())
    runs = n_cells * len(sw.seeds) * len(sw.attacks)
    util = " + utility runs" if sw.utility else ""
    return f"{sw.description} [TextHide: {n_cells} cells x {len(sw.seeds)} seeds x {len(sw.attacks)} attacks = {runs} runs{util}]"


def _digest(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _done(run_dir: Path, input_hash: str, retry_failed: bool) -> bool:
    try:
        st = json.loads((run_dir / RUN_STATUS).read_text())
    except (OSError, ValueError):
        return False
    if st.get("input_hash") != input_hash:
        return False
    if st.get("status") == "failed" and not retry_failed:
        return True
    return st.get("status") == "done" and (run_dir / "record.json").is_file()


def _tracked(run_dir: Path, input_hash: str, body) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_STATUS, {"input_hash": input_hash, "status": "started"})
    t0 = time.perf_counter()
    try:
        body()
        st = {"status": "done"}
    except Exception as e:  # noqa: BLE001  (a failed run is recorded, the sweep goes on)
        st = {"status": "failed", "error": " ".join(str(e).split()) or type(e).__name__,
              "traceback": traceback.format_exc()}
    st.update(input_hash=input_hash, wall_s=time.perf_counter() - t0)
    write_json(run_dir / RUN_STATUS, st)
    return st


def utility_runs(sweep: TextSweep) -> list[dict]:
    """One utility run per distinct defense setting, and the vanilla reference."""
    from hidebench.app.text_utility import text_utility_setting
    from hidebench.defenses.texthide_utility import TextUtilityConfig

    if sweep.utility is None:
        return []
    cfg = TextUtilityConfig.from_dict(sweep.utility["config"])
    todo = [(cell_recipe(sweep, c), False) for c in sweep.cells()]
    if sweep.utility["vanilla"] and todo:
        todo.insert(0, (todo[0][0], True))
    out, seen = [], set()
    for recipe, vanilla in todo:
        setting = text_utility_setting(recipe, cfg, vanilla)
        rid = "vanilla" if vanilla else f"texthide-{setting['mode']}-k{setting['k']}-m{setting['m']}-{_digest(setting)[:8]}"
        if rid not in seen:
            seen.add(rid)
            out.append({"id": rid, "recipe": recipe, "vanilla": vanilla, "config": cfg,
                        "input_hash": _digest({"utility": setting, "config": sweep.utility["config"]})})
    return out


def run_text_sweep(sweep, out_dir, *, ctx: ExecutionContext | None = None, retry_failed: bool = False,
                   progress: bool = True) -> dict:
    """Run (or resume) a TextHide sweep (module docstring); the counts of done, failed and skipped runs."""
    from hidebench.app.harness import run_release_attack
    from hidebench.app.text_utility import run_text_utility
    from hidebench.defenses.texthide_challenge import generate_text_to_dir
    from hidebench.text.threat import TextThreatModel

    sw = sweep if isinstance(sweep, TextSweep) else load_text_sweep(sweep)
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = (ctx or ExecutionContext.from_env()).replace(progress=False)
    write_json(out / "text_sweep.json", {"format": FORMAT, "sweep": dataclasses.asdict(sw)})
    counts = {"done": 0, "failed": 0, "reused": 0}

    def log(msg):
        if progress:
            print(msg, flush=True)

    for cell in sw.cells():
        cid = cell_id(cell)
        recipe = cell_recipe(sw, cell)
        for seed in sw.seeds:
            ch = out / "challenges" / cid / f"seed={seed}"
            rdict = dataclasses.replace(recipe, seed=seed).to_dict()
            if not challenge_matches(ch, rdict, seed):
                log(f"[{cid} seed={seed}] generating the release")
                try:
                    generate_text_to_dir(recipe, ch, seed=seed, progress=False, overwrite=True, threads=ctx.threads or 1)
                except HidebenchError as e:
                    log(f"[{cid} seed={seed}] skipped: {e}")
                    counts["failed"] += len(sw.attacks)
                    continue
            for a in sw.attacks:
                run_dir = out / "runs" / cid / f"seed={seed}" / a["label"]
                h = _digest({"recipe": rdict, "attack": a})
                if _done(run_dir, h, retry_failed):
                    counts["reused"] += 1
                    continue
                log(f"[{cid} seed={seed}] {a['label']}")
                st = _tracked(run_dir, h, lambda a=a, ch=ch, run_dir=run_dir, cid=cid, seed=seed: run_release_attack(
                    a["name"], ch, run_dir, config=a["config"], threat=TextThreatModel.from_dict(a["threat"]),
                    ctx=ctx.replace(seed=a["seed"], cache_dir=out / "cache" / cid / f"seed={seed}")))
                counts["done" if st["status"] == "done" else "failed"] += 1
                if st["status"] != "done":
                    log(f"    failed: {st['error']}")
    for u in utility_runs(sw):
        run_dir = out / "utility" / u["id"]
        if _done(run_dir, u["input_hash"], retry_failed):
            counts["reused"] += 1
            continue
        log(f"[utility] {u['id']}")
        st = _tracked(run_dir, u["input_hash"], lambda u=u, run_dir=run_dir: run_text_utility(
            u["recipe"], run_dir, u["config"], vanilla=u["vanilla"], ctx=ctx))
        counts["done" if st["status"] == "done" else "failed"] += 1
        if st["status"] != "done":
            log(f"    failed: {st['error']}")
    write_text_results(out)
    log(f"sweep {sw.name}: {counts['done']} runs done, {counts['reused']} kept from before, {counts['failed']} failed; "
        f"wrote {out / 'results.md'}")
    return counts


# ----------------------------------------------------------------------------- results

def _get(row: dict, name: str):
    v = row.get(name)
    return None if v is None or v != v else v


def write_text_results(out: Path) -> Path:
    """results.csv (one row per record, hidebench.app.report.records_table), results.md (attack
    metrics per (k, m) with the utility beside them) and frontier.png."""
    from hidebench.app.report import records_table
    from hidebench.record import SETTING_KEYS

    df = records_table([out], setting_keys=(*SETTING_KEYS, "m"))
    write_bytes(out / "results.csv", df.to_csv(index=False).encode())
    rows = df.to_dict("records")
    util = {(r.get("k"), r.get("m")): r for r in rows if r["family"] == "utility" and r.get("scheme") != "none"}
    vanilla = next((r for r in rows if r["family"] == "utility" and r.get("scheme") == "none"), None)
    van = _get(vanilla, "test_accuracy_clean") if vanilla else None
    lines = ["| attack | k | m | mask acc. (refined) | mask acc. up to sign | private-set cosine | exact | token F1 | BLEU "
             "| utility (vanilla " + (f"{van:.3f}" if van is not None else "n/a") + ") | time s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    attack_rows = sorted((r for r in rows if r["family"] == "release"),
                         key=lambda r: (str(r["attack"]), r.get("k") or 0, r.get("m") or 0, str(r["run"])))

    def f(v, nd=3):
        return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    def whole(v):                                   # k and m (pandas makes them floats next to NaN)
        return "" if v is None or v != v else str(int(v))

    for r in attack_rows:
        ref = "stages.refined_masks." if _get(r, "stages.refined_masks.mask_accuracy") is not None else "stages.masks."
        u = util.get((r.get("k"), r.get("m")))
        lines.append(f"| {r['attack']} ({Path(r['run']).name}) | {whole(r.get('k'))} | {whole(r.get('m'))} | "
                     f"{f(_get(r, ref + 'mask_accuracy'))} | {f(_get(r, ref + 'mask_accuracy_up_to_sign'))} | "
                     f"{f(_get(r, 'private_set.cosine'))} | {f(_get(r, 'text.exact_match'))} | "
                     f"{f(_get(r, 'text.token_f1'))} | {f(_get(r, 'text.bleu'))} | "
                     f"{f(_get(u, 'test_accuracy_encrypted') if u else None)} | {f(_get(r, 'time.total_s'), 1)} |")
    write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    _frontier(out, attack_rows, util, van)
    return out / "results.md"


def _frontier(out: Path, attack_rows: list[dict], util: dict, vanilla: float | None) -> None:
    """Privacy/utility frontier, text panel: utility accuracy against the share of private
    sentences recovered exactly, one point per (k, m)."""
    pts = [(r.get("k"), r.get("m"), _get(r, "text.exact_match"), _get(util.get((r.get("k"), r.get("m"))) or {},
                                                                       "test_accuracy_encrypted"))
           for r in attack_rows if _get(r, "text.exact_match") is not None
           and Path(r["run"]).name == r["attack"]]        # the attack as stocked (not a relabelled variant)
    pts = [p for p in pts if p[3] is not None]
    if not pts:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, m, exact, acc in pts:
        ax.scatter(exact, acc, s=30)
        ax.annotate(f"k={int(k)} m={int(m)}", (exact, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if vanilla is not None:
        ax.axhline(vanilla, ls="--", color="grey", lw=1, label=f"vanilla {vanilla:.3f}")
        ax.legend(fontsize=7)
    ax.set_xlabel("private sentences recovered exactly (texthide_invert)")
    ax.set_ylabel("test accuracy (TextHide, masked)")
    ax.set_title("TextHide privacy/utility frontier", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)
