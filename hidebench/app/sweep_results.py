"""What a sweep folder holds, read back: its manifest (sweep.json: the validated sweep and its
plan), the results table (one row per planned run, rebuilt from the plan, each run's
sweep_run.json and record.json every time, so it cannot disagree with them), results.csv, and
the summary a sweep prints when it ends.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.app.sweep_plan import RunSpec, UtilityRunSpec, read_json, run_from_dict, run_state
from hidebench.challenge_io import write_bytes
from hidebench.record import SETTING_KEYS, record_row
from hidebench.types import HidebenchError

FORMAT = "hidebench-sweep/1"
MANIFEST = "sweep.json"
RESULTS = "results.csv"
METRICS = ("Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2")
SETTING_COLUMNS = ("scheme", "mode", "k", "T", "n_priv", "n_encryptions")
FIRST_COLUMNS = ("run_id", "attack", "label", "status", *SETTING_COLUMNS, "seed", "attack_seed")
METRIC_COLUMNS = (*METRICS, "time_s", "peak_memory_mb", "wall_s")
LAST_COLUMNS = ("oracles", "aux", "public_pool", "recipe", "private_source", "host", "device",
                "runs_before_in_process", "error", "reason", "run_dir", "challenge")
INTEGER_COLUMNS = ("k", "T", "n_priv", "n_encryptions", "epochs", "seed", "attack_seed")


# ----------------------------------------------------------------------------- sweep.json

@dataclass
class SweepManifest:
    """sweep.json, read back: the sweep as validated (Sweep.to_dict), its planned runs (typed) and
    the whole file as written (source, skipped_cells, invocation, ...)."""

    sweep: dict
    runs: list                       # RunSpec and UtilityRunSpec
    document: dict                   # the whole of sweep.json, as written

    @property
    def grid_keys(self) -> list[str]:
        """The grid keys in the sweep file's order (sweep.json stores its tables with sorted keys)."""
        return list(self.sweep.get("grid_keys") or self.sweep["grid"])

    @property
    def attack_runs(self) -> list[RunSpec]:
        return [r for r in self.runs if isinstance(r, RunSpec)]


def write_sweep_manifest(out: Path, fields: dict) -> None:
    """Write DIR/sweep.json (atomically): the format tag and `fields` (sweep, plan, invocation)."""
    from hidebench.challenge_io import write_json

    write_json(out / MANIFEST, {"format": FORMAT, **fields})


def read_sweep_manifest(out_dir) -> SweepManifest:
    """DIR/sweep.json, or one clear error: no sweep folder, or a sweep.json that is damaged (its
    sweep or runs lack the fields hidebench writes)."""
    p = Path(out_dir) / MANIFEST
    m = read_json(p)
    if m is None or m.get("format") != FORMAT:
        raise HidebenchError(f"{out_dir} is not a sweep folder: {MANIFEST} is missing or unreadable "
                             "(run `hidebench sweep SWEEP --out DIR` first)")
    sw, runs = m.get("sweep"), m.get("runs")
    ok = (isinstance(sw, dict) and isinstance(sw.get("grid"), dict) and isinstance(sw.get("attack"), list)
          and all(isinstance(a, dict) and isinstance(a.get("label"), str) for a in sw["attack"])
          and isinstance(sw.get("name"), str) and isinstance(runs, list))
    planned = [run_from_dict(r) for r in runs] if ok else []
    if not ok or None in planned:
        raise HidebenchError(f"{p} is damaged: its sweep or runs do not have the fields hidebench writes "
                             "(rerun the sweep to rewrite it)")
    return SweepManifest(sweep=sw, runs=planned, document=m)


def is_sweep_dir(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# ----------------------------------------------------------------------------- results

def _row(out: Path, run: RunSpec | UtilityRunSpec) -> dict:
    """One planned run as a row of the results table: its plan, its status and, once done, its record."""
    from hidebench.record import load_record

    status, st = run_state(out, run)
    s = run.setting
    row = {"run_id": run.run_id, "status": status, **{k: getattr(s, k) for k in SETTING_COLUMNS},
           **{k: v for k, v in run.cell.items() if k not in SETTING_COLUMNS}}
    if isinstance(run, RunSpec):
        row.update(attack=run.attack, label=run.label, seed=run.seed, attack_seed=run.attack_seed,
                   oracles=",".join(run.oracles) or "none", aux=run.aux, public_pool=run.public_pool,
                   challenge=run.challenge)
    else:
        row.update(attack="utility", label="utility", epochs=s.epochs, seed=run.seed, attack_seed=run.seed,
                   oracles="none", aux=None, public_pool=None, challenge=None)
    row.update(recipe=s.recipe, private_source=s.private_source, host=st.get("host"),
               error=st.get("error") if status == "failed" else None, reason=run.reason, run_dir=run.run_dir)
    if status == "done":
        rec = load_record(out / run.run_dir / "record.json")
        measured = record_row(rec)
        if isinstance(run, RunSpec):          # a training run's setting is its plan's (a record's T may be its epochs)
            row.update({k: measured[k] for k in SETTING_COLUMNS if measured.get(k) is not None})
        row.update({k.removeprefix("challenge."): v for k, v in measured.items()
                    if k not in ("attack", "family", "oracles", "seed", "epochs", *SETTING_KEYS)})
        row.update(time_s=measured.get("time.total_s"), wall_s=st.get("wall_s"),
                   runs_before_in_process=st.get("runs_before_in_process"), aux=rec.threat_model.get("aux"),
                   device=rec.context.get("device"))
    return row


def results_table(out_dir):
    """One row per planned run of the sweep in out_dir, from its plan (sweep.json), each run's
    sweep_run.json and record.json: columns FIRST_COLUMNS (with `epochs` after the setting when
    the sweep trains), the grid keys, METRIC_COLUMNS, the private-set and stage metrics, per-stage
    timings (time.*), then LAST_COLUMNS. Training runs have attack and label 'utility'."""
    import pandas as pd

    out = Path(out_dir)
    manifest = read_sweep_manifest(out)
    rows = [_row(out, run) for run in manifest.runs]
    first = list(FIRST_COLUMNS)
    if any(isinstance(r, UtilityRunSpec) for r in manifest.runs):
        first.insert(first.index("seed"), "epochs")
    fixed = [*first, *[k for k in manifest.grid_keys if k not in SETTING_COLUMNS and k not in LAST_COLUMNS],
             *METRIC_COLUMNS]
    extra = sorted({k for r in rows for k in r} - set(fixed) - set(LAST_COLUMNS))
    df = pd.DataFrame(rows, columns=[*fixed, *extra, *LAST_COLUMNS])
    for col in INTEGER_COLUMNS:                # integers, empty where they do not apply
        if col not in df:
            continue
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


# ----------------------------------------------------------------------------- the summary

@dataclass
class SweepSummary:
    """What one invocation of a sweep did, and what the sweep folder holds now."""

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

    @property
    def settled(self) -> int:
        """Runs with an outcome: done, failed or skipped."""
        return self.done + len(self.failed) + self.skipped_runs

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
