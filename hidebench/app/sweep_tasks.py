"""The work of a sweep as it runs in a worker process (or a Ray task): generate a challenge, run
an attack on it, or train a utility run, each from a self-contained task (the worker's execution
context travels in the task, never in the driver's environment), and record each run's status in
its sweep_run.json (started, then done or failed with the error) around it.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from hidebench.app.sweep_file import import_plugins
from hidebench.app.sweep_plan import RUN_STATUS, challenge_matches
from hidebench.challenge_io import write_json
from hidebench.recipes import recipe_from_dict
from hidebench.types import one_line


@dataclass
class ChallengeTask:
    """Generate one (cell, seed) challenge into `dir` unless it already holds it."""

    dir: str
    recipe: dict
    seed: int
    data_root: str | None
    threads: int
    imports: list


@dataclass
class RunTask:
    """What every tracked run has: its id and folder (absolute), its input hash, what it runs
    ('utility' for a training run) and its execution context (ExecutionContext.to_dict)."""

    run_id: str
    run_dir: str
    input_hash: str
    attack: str
    context: dict


@dataclass
class AttackTask(RunTask):
    """Run one attack on one challenge through the harness."""

    challenge: str
    config: dict
    threat: dict
    imports: list


@dataclass
class UtilityTask(RunTask):
    """Train and test one defense setting (hidebench.app.utility)."""

    recipe: dict
    config: dict
    vanilla: bool


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


def execute_challenge(task: ChallengeTask) -> dict:
    """Worker task: generate one (cell, seed) challenge unless the folder already holds it."""
    import_plugins(task.imports)
    ch_dir = Path(task.dir)
    t0 = time.perf_counter()
    if challenge_matches(ch_dir, task.recipe, task.seed):
        return {"ok": True, "reused": True, "wall_s": 0.0}
    try:
        from hidebench.defenses.challenge import generate_to_dir

        recipe = recipe_from_dict(task.recipe)
        with _thread_limits(task.threads):
            generate_to_dir(recipe, ch_dir, seed=task.seed, data_root=task.data_root, progress=False, overwrite=True)
    except Exception as e:
        return {"ok": False, "error": one_line(e, with_type=True), "traceback": traceback.format_exc(),
                "wall_s": time.perf_counter() - t0}
    return {"ok": True, "reused": False, "wall_s": time.perf_counter() - t0}


def _tracked_run(task: RunTask, body, prepare=None) -> dict:
    """Run `body(ctx, run_dir) -> (metrics, time_s)` in its run folder, with sweep_run.json written
    around it (started, then done or failed with the error); `prepare()` adds fields to the status
    after 'started' is written (the attack's import time). Returns the final status."""
    from hidebench.context import ExecutionContext

    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"run_id": task.run_id, "input_hash": task.input_hash, "attack": task.attack,
            "host": socket.gethostname(), "pid": os.getpid(), "niceness": os.nice(0)}
    write_json(run_dir / RUN_STATUS, {**base, "status": "started", "started": _now()})
    (run_dir / "record.json").unlink(missing_ok=True)      # a record here is from an unfinished attempt
    if prepare is not None:
        base.update(prepare())
    _reset_peak_rss()
    t0 = time.perf_counter()
    try:
        ctx = ExecutionContext(**task.context)
        with _thread_limits(ctx.threads):
            metrics, time_s = body(ctx, run_dir)
        status = {"status": "done", "metrics": metrics, "time_s": time_s}
    except Exception as e:
        status = {"status": "failed", "error": one_line(e, with_type=True), "traceback": traceback.format_exc()}
    status.update(wall_s=time.perf_counter() - t0, finished=_now())
    write_json(run_dir / RUN_STATUS, {**base, **status})
    return {k: v for k, v in {**base, **status}.items() if k != "traceback"}


_RUNS_IN_THIS_PROCESS = 0


def execute_run(task: AttackTask) -> dict:
    """Worker task: run one attack on one challenge through the harness (`_tracked_run`)."""
    import_plugins(task.imports)
    from hidebench.app.harness import run_release_attack
    from hidebench.threat import ReleaseThreatModel

    def prepare():
        global _RUNS_IN_THIS_PROCESS
        before = _RUNS_IN_THIS_PROCESS       # 0: a fresh process, its peak memory is the run's own
        _RUNS_IN_THIS_PROCESS += 1
        return {"runs_before_in_process": before, "import_s": _warm_up(task.attack)}

    def body(ctx, run_dir):
        rec = run_release_attack(task.attack, task.challenge, run_dir, config=task.config,
                                 threat=ReleaseThreatModel.from_dict(task.threat), ctx=ctx)
        return rec.metrics.get("challenge", {}), rec.timings.get("total_s")

    return _tracked_run(task, body, prepare)


def execute_utility(task: UtilityTask) -> dict:
    """Worker task: train and test one defense setting (hidebench.app.utility), resuming from its
    epoch checkpoint (`_tracked_run`)."""
    from hidebench.app.utility import run_utility
    from hidebench.defenses.utility.config import UtilityConfig

    def body(ctx, run_dir):
        rec = run_utility(recipe_from_dict(task.recipe), run_dir, UtilityConfig.from_dict(task.config),
                          vanilla=task.vanilla, ctx=ctx)
        return rec.metrics, rec.timings.get("total_s")

    return _tracked_run(task, body)


def write_failed(task: RunTask, error: str) -> dict:
    """Record a run as failed without running it (its challenge failed, its worker died)."""
    st = {"run_id": task.run_id, "input_hash": task.input_hash, "attack": task.attack, "status": "failed",
          "error": error, "finished": _now(), "host": socket.gethostname()}
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_STATUS, st)
    return st


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
