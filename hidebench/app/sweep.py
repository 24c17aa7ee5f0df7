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

The parts: the sweep file (sweep_file), the plan and run states (sweep_plan), the worker tasks
(sweep_tasks), the backends (sweep_backends), the folder's manifest, results and summary
(sweep_results); this module drives them and lists a plan.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import Counter, deque
from pathlib import Path

from hidebench.app.sweep_backends import BACKENDS, open_backend
from hidebench.app.sweep_file import Sweep, builtin_sweeps, load_sweep, sweep_from_dict
from hidebench.app.sweep_plan import (
    RUN_STATUS,
    ChallengeSpec,
    RunSpec,
    UtilityRunSpec,
    cell_label,
    make_plan,
    read_json,
    run_state,
    utility_runs,
)
from hidebench.app.sweep_results import (
    MANIFEST,
    RESULTS,
    SweepSummary,
    is_sweep_dir,
    read_sweep_manifest,
    results_table,
    write_results,
    write_sweep_manifest,
)
from hidebench.app.sweep_tasks import (
    AttackTask,
    ChallengeTask,
    UtilityTask,
    execute_challenge,
    execute_run,
    execute_utility,
    write_failed,
)
from hidebench.challenge_io import check_out_dir
from hidebench.config import check_int
from hidebench.resources import MAX_THREADS, MAX_WORKERS
from hidebench.types import HidebenchError, one_line

WORKER_DIED = "the worker process died (killed, or out of memory) while this ran"


def check_sweep_dir(out_dir) -> Path:
    """--out for a sweep: a new or empty folder, or one that already holds a sweep (to resume)."""
    out = check_out_dir(out_dir)
    if out.is_dir() and any(out.iterdir()) and not is_sweep_dir(out):
        raise HidebenchError(f"{out} holds other files and no {MANIFEST}; give a new folder or the folder of a sweep "
                             "to resume")
    if is_sweep_dir(out):
        read_sweep_manifest(out)
    return out


def _check_execution(backend: str, address: str | None, workers: int, threads: int | None) -> int:
    """Check where the sweep runs; the threads per run (default: this machine's cores / workers)."""
    if backend not in BACKENDS:
        raise HidebenchError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address and backend != "ray":
        raise HidebenchError("--address names a Ray cluster: use it with --backend ray")
    check_int(workers, "--workers", min=0, max=MAX_WORKERS)
    if backend == "ray" and workers == 0:
        raise HidebenchError("--workers 0 (in this process) is for the local backend")
    threads = threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
    check_int(threads, "--threads", min=1, max=MAX_THREADS)
    return threads


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

    echo = echo or (lambda *a, **k: None)
    sw = sweep_from_dict(sweep, run_imports=True) if isinstance(sweep, dict) else load_sweep(sweep, run_imports=True)
    threads = _check_execution(backend, address, workers, threads)
    out = check_sweep_dir(out_dir).resolve()
    ctx = ctx or ExecutionContext.from_env()
    ctx.check_device()                   # a missing CUDA device fails here, not in every run
    plan = make_plan(sw, out, data_root=ctx.data_root, strict=True)
    summary = SweepSummary(out=out, name=sw.name, backend=backend, workers=workers, threads=threads,
                           total=len(plan.runs),
                           skipped_cells=[(cell_label(s["cell"]), s["reason"]) for s in plan.skipped_cells])
    todo = []
    for r in plan.runs:
        state, st = run_state(out, r)
        if state == "skipped":
            summary.skipped_runs += 1
        elif state == "done":
            summary.reused += 1
            summary.done += 1
        elif state == "failed" and not retry_failed:
            summary.failed.append((r.run_id, st.get("error", "")))
        else:
            todo.append(r)
    pool = open_backend(backend, workers, threads, address, fresh_workers)

    # Nothing was written before this point: a bad sweep file, --out or backend changes nothing.
    out.mkdir(parents=True, exist_ok=True)
    write_sweep_manifest(out, {"sweep": sw.to_dict(), "base_recipe": sw.base, "source": sw.source,
                               "runs": [r.to_dict() for r in plan.runs], "skipped_cells": plan.skipped_cells,
                               "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "invocation": {"backend": backend, "address": address, "workers": workers,
                                              "threads": threads, "fresh_workers": fresh_workers,
                                              "host": socket.gethostname()}})
    try:
        _Runner(sw, out, ctx, threads, pool, summary, _Progress(summary, progress, echo)).run(plan, todo)
    finally:
        echo(summary.text(results_table(out), grid_keys=list(sw.grid)))
    return summary


class _Progress:
    """A sweep's progress: a bar (tqdm) on a terminal, else one line per settled run through echo."""

    def __init__(self, summary: SweepSummary, enabled: bool, echo):
        from hidebench.progress import bar

        self.summary, self.enabled, self.echo = summary, enabled, echo
        self.bar = bar(total=summary.total, initial=summary.settled, enabled=enabled, desc=f"sweep {summary.name}",
                       unit="run", smoothing=0.1)
        self.lines = enabled and self.bar.disable

    def note(self, text: str) -> None:
        if self.lines:
            self.echo(text)
        elif self.enabled and not self.bar.disable and "failed" in text:
            self.bar.write(text)

    def show(self, running: int, refresh: bool = True) -> None:
        s = self.summary
        self.bar.set_postfix_str(f"done {s.done} failed {len(s.failed)} skipped {s.skipped_runs} running {running}",
                                 refresh=refresh)

    def step(self, running: int) -> None:
        self.show(running, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Runner:
    """Submits a sweep's tasks to a backend as their inputs become ready (a challenge before the
    runs on it, as many at a time as the backend takes), settles every result as it comes back
    (a crashed worker fails the runs it held), and keeps the summary and results.csv current."""

    def __init__(self, sweep: Sweep, out: Path, ctx, threads: int, backend, summary: SweepSummary,
                 progress: _Progress):
        self.sweep, self.out, self.ctx, self.threads = sweep, out, ctx, threads
        self.backend, self.summary, self.progress = backend, summary, progress
        self.attacks = {a["label"]: a for a in sweep.attacks}
        self.waiting: dict[str, list] = {}    # challenge folder -> the runs waiting for it
        self.ready: deque = deque()           # runs whose inputs are there
        self.gen_queue: deque = deque()       # challenges to generate
        self.inflight: dict = {}              # handle -> ChallengeSpec or run spec

    def run(self, plan, todo: list) -> None:
        """Run `todo` (runs of `plan`) to the end, or until interrupted; results.csv written either way."""
        t_start = time.perf_counter()
        try:
            self._queue(plan, todo)
            self.progress.show(self._running())
            self._loop()
        except BaseException as e:          # Ctrl-C (or a bug): stop the workers; runs in flight are redone next time
            self.summary.interrupted = isinstance(e, KeyboardInterrupt)
            self.backend.close(list(self.inflight), cancel=True)
            self.backend = None
            raise
        finally:
            self.progress.close()
            if self.backend is not None:
                self.backend.close()
            self.summary.wall_s = time.perf_counter() - t_start
            write_results(self.out)

    def _queue(self, plan, todo: list) -> None:
        for r in todo:
            d = self.out / r.run_dir
            st = read_json(d / RUN_STATUS)
            if d.exists() and (st is None or st.get("input_hash") != r.input_hash):
                shutil.rmtree(d)                 # another input's run (or debris): start clean
            if isinstance(r, UtilityRunSpec):    # needs no challenge
                self.ready.append(r)
            else:
                self.waiting.setdefault(r.challenge, []).append(r)
        challenges = {c.dir: c for c in plan.challenges}
        self.gen_queue.extend(challenges[c] for c in self.waiting)

    def _loop(self) -> None:
        last_csv = time.perf_counter()
        while self.gen_queue or self.ready or self.inflight:
            self._submit()
            for h in self.backend.wait(list(self.inflight), timeout=1.0):
                if h in self.inflight:           # else settled with a crashed pool
                    self._settle(h)
                    self.progress.show(self._running())
            if time.perf_counter() - last_csv > 10:
                write_results(self.out)
                last_csv = time.perf_counter()

    def _running(self) -> int:
        return sum(1 for obj in self.inflight.values() if not isinstance(obj, ChallengeSpec))

    def _submit(self) -> None:
        cap = self.backend.capacity
        while (cap is None or len(self.inflight) < cap) and (self.ready or self.gen_queue):
            if self.ready:
                r = self.ready.popleft()
                fn = execute_utility if isinstance(r, UtilityRunSpec) else execute_run
                self.inflight[self.backend.submit(fn, self._task(r))] = r
            else:
                c = self.gen_queue.popleft()
                self.inflight[self.backend.submit(execute_challenge, self._challenge_task(c))] = c
            self.progress.show(self._running())

    def _settle(self, handle) -> None:
        obj = self.inflight.pop(handle)
        try:
            result = self.backend.result(handle)
        except Exception as e:
            result = self._failure(obj, e)
        if isinstance(obj, ChallengeSpec):
            self._challenge_done(obj, result)
        else:
            self._finish_run(obj, result)

    def _failure(self, obj, e: Exception) -> dict:
        """The result of a task that raised in the backend; when its worker died, the backend's
        other tasks in flight died with it: their runs fail, their challenges are queued again."""
        crashed = self.backend.crashed(e)
        err = WORKER_DIED if crashed else one_line(e, with_type=True)
        if crashed:
            for h, other in list(self.inflight.items()):
                del self.inflight[h]
                if isinstance(other, ChallengeSpec):
                    self.gen_queue.appendleft(other)
                else:
                    self._finish_run(other, write_failed(self._task(other), err))
            self.backend.restart()
        if isinstance(obj, ChallengeSpec):
            return {"ok": False, "status": "failed", "error": err}
        return write_failed(self._task(obj), err)

    def _challenge_done(self, c: ChallengeSpec, result: dict) -> None:
        runs = self.waiting.pop(c.dir, [])
        if result.get("ok"):
            self.ready.extend(runs)
            return
        err = f"challenge generation failed: {result.get('error')}"
        for r in runs:
            self._finish_run(r, write_failed(self._task(r), err))

    def _finish_run(self, r, result: dict) -> None:
        s = self.summary
        s.executed.append(r.run_id)
        if result.get("status") == "done":
            s.done += 1
            s.run_wall_s.append(result.get("wall_s", 0.0))
            m = result.get("metrics", {})
            score = (f"test accuracy {m.get('test_accuracy_clean', float('nan')):.3f}" if isinstance(r, UtilityRunSpec)
                     else f"Max_SSIM {m.get('Max_SSIM', float('nan')):.3f}")
            self.progress.note(f"[{s.settled}/{s.total}] done {r.run_id}: {score} ({result.get('wall_s', 0):.1f} s)")
        else:
            s.failed.append((r.run_id, result.get("error", "")))
            self.progress.note(f"failed {r.run_id}: {result.get('error', '')}")
        self.progress.step(self._running())

    def _context(self, run_dir: str, seed: int) -> dict:
        return self.ctx.replace(threads=self.threads, cache_dir=str(self.out / run_dir / "cache"), progress=False,
                                seed=seed).to_dict()

    def _task(self, r: RunSpec | UtilityRunSpec):
        if isinstance(r, UtilityRunSpec):
            return UtilityTask(run_id=r.run_id, run_dir=str(self.out / r.run_dir), input_hash=r.input_hash,
                               attack="utility", context=self._context(r.run_dir, r.seed), recipe=r.recipe,
                               config=r.config, vanilla=r.vanilla)
        a = self.attacks[r.label]
        return AttackTask(run_id=r.run_id, run_dir=str(self.out / r.run_dir), input_hash=r.input_hash,
                          attack=a["name"], context=self._context(r.run_dir, r.attack_seed),
                          challenge=str(self.out / r.challenge), config=a["config"], threat=a["threat"],
                          imports=self.sweep.imports)

    def _challenge_task(self, c: ChallengeSpec) -> ChallengeTask:
        return ChallengeTask(dir=str(self.out / c.dir), recipe=c.recipe, seed=c.seed, data_root=self.ctx.data_root,
                             threads=self.threads, imports=self.sweep.imports)


# ----------------------------------------------------------------------------- listing

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
    counts: Counter = Counter()
    groups: dict[str, list] = {}
    for r in plan.runs:
        state = run_state(out, r)[0] if out is not None else ("skipped" if r.status == "skipped" else "pending")
        counts[state] += 1
        groups.setdefault(r.cell_id if isinstance(r, RunSpec) else "utility", []).append((r, state))
    lines += [_group_line(entries) for entries in groups.values()]
    lines.append("total: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return lines


def _group_line(entries: list) -> str:
    """One line of --list: a cell's runs (or the training runs) and how many are in each state."""
    r0 = entries[0][0]
    s = r0.setting
    if isinstance(r0, UtilityRunSpec):
        head = "  utility (training runs): " + ", ".join(r.run_id.split("/", 1)[1] for r, _ in entries)
    else:
        head = f"  {cell_label(r0.cell)}  [{s.scheme} {s.mode} k={s.k} T={s.T} n_priv={s.n_priv}]"
    if r0.status == "skipped":
        return f"{head}: skipped: {r0.reason}"
    states = Counter(state for _, state in entries)
    return f"{head}: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items()))


def sweep_overview(name: str) -> str:
    """One line for `hidebench list`."""
    sw = load_sweep(name)
    return f"{sw.description} [{_count(sw)}]"


def _count(sw: Sweep) -> str:
    def n(k, what):
        return f"{k} {what}{'' if k == 1 else 's'}"

    utility = f" + {n(len(utility_runs(sw)), 'utility run')}" if sw.utility is not None else ""
    return (f"{n(sw.n_cells, 'cell')} x {n(len(sw.seeds), 'seed')} x {n(len(sw.attacks), 'attack')} = "
            f"{n(sw.n_runs, 'run')}{utility}")


__all__ = ["BACKENDS", "RESULTS", "RUN_STATUS", "Sweep", "SweepSummary", "builtin_sweeps", "check_sweep_dir",
           "is_sweep_dir", "load_sweep", "make_plan", "plan_lines", "results_table", "run_sweep", "sweep_from_dict",
           "sweep_overview", "write_results"]
