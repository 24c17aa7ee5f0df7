"""Sweeps (hidebench sweep) and their reports (hidebench report SWEEP_DIR): the sweep file is
validated like a recipe, infeasible cells are skipped with the reason, a sweep resumes without
redoing finished runs (after a kill too), failures are recorded and the sweep goes on,
--retry-failed redoes them, results.csv is rebuilt from the records, the Ray backend gives the
same rows as the local one, and the report works on a partly finished sweep."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hidebench.app.anchors import load_anchors
from hidebench.app.cli import main
from hidebench.app.sweep import (
    RESULTS,
    RUN_STATUS,
    builtin_sweeps,
    load_sweep,
    make_plan,
    results_table,
    run_sweep,
    write_results,
)
from hidebench.app.sweep_report import build_sweep_report, fit_loglog, leaderboard
from hidebench.attacks.base import ATTACKS
from hidebench.context import ExecutionContext
from hidebench.record import load_record
from hidebench.types import HidebenchError

REQUIRED = ["attack", "scheme", "mode", "k", "T", "n_priv", "seed", "status", "Max_SSIM", "Mean_SSIM", "Min_L2",
            "Mean_L2", "time_s"]
CTX = ExecutionContext(device="cpu", progress=False)
TINY_CARLINI = ('{ similarity = { method = "pearson" }, reassignment = { rounds = 0 }, '
                'regression = { steps = 10, adam_steps = 10 } }')


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module of test attacks, importable by the sweep's `imports` (and by spawned workers,
    which inherit sys.path): `flaky` fails until its marker file exists, `sleepy` blocks while
    its marker exists, `crasher` kills its worker process. Unregistered afterwards."""
    name = f"sweep_plugin_{uuid.uuid4().hex[:8]}"
    ok, block = tmp_path / "flaky-ok", tmp_path / "sleepy-block"
    _write(tmp_path / f"{name}.py", f'''
        import os
        import time
        from pathlib import Path

        from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register
        from hidebench.attacks.identity import baseline_decryption


        @register
        class Flaky(ReleaseAttack):
            """Test attack: fails until a marker file exists."""

            name = "flaky"

            def run(self, view, oracle, ctx):
                if not Path({str(ok)!r}).exists():
                    raise RuntimeError("flaky: marker missing")
                return ReleaseResult(decryption=baseline_decryption(view), timings={{"alpha_s": 0.001}})


        @register
        class Sleepy(ReleaseAttack):
            """Test attack: blocks while a marker file exists."""

            name = "sleepy"

            def run(self, view, oracle, ctx):
                while Path({str(block)!r}).exists():
                    time.sleep(0.2)
                return ReleaseResult(decryption=baseline_decryption(view))


        @register
        class Crasher(ReleaseAttack):
            """Test attack: kills the process it runs in."""

            name = "crasher"

            def run(self, view, oracle, ctx):
                os._exit(3)
        ''')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {"module": name, "ok": ok, "block": block, "dir": tmp_path}
    for attack in ("flaky", "sleepy", "crasher"):
        ATTACKS.pop(attack, None)
    sys.modules.pop(name, None)


# ----------------------------------------------------------------------------- the sweep file

BASE = """
    recipe = "faces"
    seeds = [1]
    [grid]
    n_priv = [8]
    [[attack]]
    name = "identity"
    """


@pytest.mark.parametrize("text, message", [
    ("colour = 1\n" + BASE, r"unknown key\(s\) sweep\.colour"),
    (BASE.replace('name = "identity"', 'name = "identity"\nconfg = {}'), r"unknown key\(s\) attack\[0\]\.confg"),
    (BASE + '[[attack]]\nname = "carlini"\nconfig = { regression = { reassign = 0 } }\n',
     r"attack\[1\] \(carlini\).*carlini\.regression\.reassign"),
    (BASE.replace("n_priv = [8]", "nprivs = [8]"), r"unknown grid key grid\.nprivs"),
    (BASE.replace("n_priv = [8]", 'T = ["5"]'), r"grid\.T values must be of type int"),
    (BASE + '[[attack]]\nname = "dlg"\n', "federated update"),
    (BASE + '[[attack]]\nname = "identity"\n', "labelled 'identity'"),
    (BASE + '[[attack]]\nname = "nope"\n', "unknown attack 'nope'"),
    (BASE.replace('recipe = "faces"\n    seeds = [1]', 'recipe = "instahide2020"'), "give the challenge-generation seeds"),
    (BASE.replace('seeds = [1]', 'seeds = [1, 1]'), "repeats a seed"),
    (BASE.replace('[[attack]]\n    name = "identity"', ""), "no \\[\\[attack\\]\\] entries"),
    (BASE + "[utility]\nepoch = 2\n", r"unknown key\(s\) utility\.epoch"),
    (BASE + "[utility]\nepochs = 0\n", r"utility\.epochs must be an integer >= 1"),
])
def test_sweep_file_errors_name_the_problem(tmp_path, capsys, text, message):
    f = _write(tmp_path / "bad.toml", text)
    with pytest.raises(HidebenchError, match=message):
        load_sweep(f)
    assert main(["sweep", str(f), "--out", str(tmp_path / "S")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hidebench: error: ")
    assert not (tmp_path / "S").exists()                 # nothing written


def test_sweep_out_must_be_new_or_a_sweep(tmp_path, capsys):
    f = _write(tmp_path / "ok.toml", BASE)
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "notes.txt").write_text("mine")
    assert main(["sweep", str(f), "--out", str(tmp_path / "S"), "--workers", "0"]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert main(["sweep", str(f), "--out", str(tmp_path / "S2"), "--address", "x:1"]) == 2
    assert "--backend ray" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "S").iterdir()) == ["notes.txt"] and not (tmp_path / "S2").exists()


def test_stock_sweeps_parse_and_enumerate(monkeypatch, capsys):
    monkeypatch.delenv("HIDEBENCH_DATA", raising=False)
    assert {"faces-quick", "instahide2020-kT", "instahide2020-scaling"} <= set(builtin_sweeps())
    quick = load_sweep("faces-quick")
    assert quick.recipe == "faces" and quick.n_runs == quick.n_cells * len(quick.seeds) * len(quick.attacks)
    scaling = make_plan(load_sweep("instahide2020-scaling"), strict=False)      # no data root: not sized
    runs = scaling.runs
    assert sorted({r.setting.n_priv for r in runs}) == [25, 50, 100, 200]
    assert {(r.setting.T, r.setting.k) for r in runs} == {(50, 6)}
    assert sorted({r.attack for r in runs}) == ["carlini", "identity"] and len(runs) == 8
    large = load_sweep("instahide2020-scaling-large")
    assert [a["config"]["dense_max"] for a in large.attacks] == [0]           # every size on the scalable path
    runs = make_plan(large, strict=False).runs
    assert sorted(r.setting.n_priv for r in runs) == [25, 50, 100, 200, 500, 1000]
    kt = make_plan(load_sweep("instahide2020-kT"), strict=False).runs
    assert len({(r.setting.k, r.setting.T) for r in kt}) == 9
    assert main(["sweep", "instahide2020-scaling", "--list"]) == 0
    out = capsys.readouterr().out
    assert "4 cells x 1 seed x 2 attacks = 8 runs" in out and "n_priv=200, T=50, k=6" in out
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "sweeps" in listed and all(name in listed for name in ("faces-quick", "instahide2020-scaling"))
    with pytest.raises(HidebenchError, match="private source cifar10:test"):      # running needs the data
        make_plan(load_sweep("instahide2020-scaling"), strict=True)


# ----------------------------------------------------------------------------- running and resuming

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path(f"/proc/{pid}").exists() else True


def _mtimes(out: Path) -> dict:
    return {p.parent.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "runs").rglob("record.json")}


def test_sweep_skips_infeasible_records_failures_resumes_and_retries(tmp_path, plugin, capsys):
    f = _write(tmp_path / "flow.toml", f"""
        name = "flow"
        recipe = "faces"
        seeds = [1, 2]
        imports = ["{plugin['module']}"]
        [grid]
        n_priv = [8]
        T = [4]
        k = [2, 4]
        pool_screen = [40]
        [[attack]]
        name = "identity"
        [[attack]]
        name = "flaky"
        """)
    out = tmp_path / "S"
    # 1. through the CLI, in this process: k=2 cross-dataset is infeasible; flaky fails; exit status 1
    assert main(["sweep", str(f), "--out", str(out), "--workers", "0", "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "8 planned | 2 done (2 now, 0 reused) | 2 failed | 4 skipped (1 infeasible cell(s))" in printed
    assert "skipped n_priv=8, T=4, k=2, pool_screen=40: recipe [scheme]: cross-dataset mixing needs k >= 3" in printed
    df = pd.read_csv(out / RESULTS)
    assert set(REQUIRED) <= set(df.columns) and len(df) == 8
    assert df["status"].value_counts().to_dict() == {"skipped": 4, "done": 2, "failed": 2}
    skipped = df[df["status"] == "skipped"]
    assert (skipped["k"] == 2).all() and skipped["reason"].str.contains("k >= 3").all()
    failed = df[df["status"] == "failed"]
    assert (failed["attack"] == "flaky").all() and failed["error"].str.contains("flaky: marker missing").all()
    done = df[df["status"] == "done"]
    assert (done["attack"] == "identity").all() and done["Max_SSIM"].notna().all() and (done["time_s"] >= 0).all()
    assert sorted(done["seed"]) == [1, 2] and (done["n_encryptions"] == 32).all()
    st = json.loads((out / failed["run_dir"].iloc[0] / RUN_STATUS).read_text())
    assert st["status"] == "failed" and "RuntimeError" in st["traceback"]
    first = _mtimes(out)

    # 2. the same command again: nothing to do (failed runs wait for --retry-failed)
    s = run_sweep(f, out, workers=0, ctx=CTX, progress=False, echo=None)
    assert s.executed == [] and len(s.failed) == 2 and s.done == 2 and _mtimes(out) == first

    # 3. --retry-failed redoes exactly the failed runs
    plugin["ok"].touch()
    s = run_sweep(f, out, workers=0, ctx=CTX, retry_failed=True, progress=False, echo=None)
    assert sorted(s.executed) == sorted(failed["run_id"]) and s.failed == [] and s.done == 4
    now = _mtimes(out)
    assert {k: v for k, v in now.items() if k in first} == first            # finished runs untouched
    df = results_table(out)
    assert df["status"].value_counts().to_dict() == {"skipped": 4, "done": 4}
    assert df.loc[(df["attack"] == "flaky") & (df["status"] == "done"), "time.alpha_s"].notna().all()   # stage times

    # 4. a changed sweep file reuses every run whose inputs did not change: a new attack entry
    #    runs alone; a new grid key with the value the recipe already had changes no input
    f.write_text(f.read_text().replace("pool_screen = [40]", 'pool_screen = [40]\nmode = ["cross"]')
                 + '[[attack]]\nname = "identity"\nlabel = "identity-seed5"\nseed = 5\n')
    s = run_sweep(f, out, workers=0, ctx=CTX, progress=False, echo=None)
    assert sorted(s.executed) == [f"n_priv=8_T=4_k=4_pool_screen=40_mode=cross/seed={seed}/identity-seed5"
                                  for seed in (1, 2)]
    assert s.done == 6 and s.reused == 4 and _mtimes(out).items() >= now.items()
    assert sorted(p.relative_to(out).as_posix() for p in (out / "challenges").glob("*/*")) == [
        f"challenges/n_priv=8_T=4_k=4_pool_screen=40/seed={seed}" for seed in (1, 2)]     # none generated again
    assert load_record(out / "runs" / s.executed[0] / "record.json").seed == 5

    # 5. results.csv is rebuilt from the records: deleting it loses nothing
    before = (out / RESULTS).read_text()
    (out / RESULTS).unlink()
    write_results(out)
    assert (out / RESULTS).read_text() == before


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, plugin):
    """A sweep killed mid-run (driver and worker, SIGKILL) loses only the run in flight; its
    report says what is missing; the rerun (with a changed sweep file, --fresh-workers) redoes
    only the missing runs, and a run that kills its worker is recorded as failed while the sweep
    goes on. SIGTERM to the driver stops its worker with it."""
    f = _write(tmp_path / "kill.toml", f"""
        recipe = "faces"
        seeds = [1]
        imports = ["{plugin['module']}"]
        [grid]
        n_priv = [8]
        T = [4]
        pool_screen = [40]
        [[attack]]
        name = "identity"
        [[attack]]
        name = "sleepy"
        [[attack]]
        name = "identity"
        label = "identity-late"
        """)
    out, cell = tmp_path / "S", "n_priv=8_T=4_pool_screen=40/seed=1"
    plugin["block"].touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin["dir"]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "hidebench", "sweep", str(f), "--out", str(out), "--workers", "1",
                             "--threads", "1", "--quiet"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sleepy = out / "runs" / cell / "sleepy" / RUN_STATUS
    try:
        for _ in range(1500):                       # until the sleepy run has started (or the sweep died)
            if sleepy.is_file() or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        worker = json.loads(sleepy.read_text())
        assert worker["status"] == "started"
        os.kill(proc.pid, signal.SIGTERM)           # the driver alone: it stops its worker as on Ctrl-C
        assert proc.wait(timeout=60) == 130
        for _ in range(100):
            if not _alive(worker["pid"]):
                break
            time.sleep(0.1)
        assert not _alive(worker["pid"]), "the worker outlived its terminated sweep"
        err = proc.stderr.read().decode()
        assert "leaked semaphore" not in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _mtimes(out)
    assert list(before) == [f"runs/{cell}/identity"]

    report, missing = build_sweep_report(out, tmp_path / "R")
    assert missing == "2 of 3 runs missing: 1 not run, 1 started, not finished"
    html = report.read_text()
    assert "This sweep is not finished" in html and f"{cell}/identity-late" in html

    plugin["block"].unlink()
    f.write_text(f.read_text() + '[[attack]]\nname = "crasher"\n')
    s = run_sweep(f, out, workers=1, threads=1, fresh_workers=True, ctx=CTX, progress=False, echo=None)
    assert s.reused == 1 and _mtimes(out)[f"runs/{cell}/identity"] == before[f"runs/{cell}/identity"]
    assert sorted(s.executed) == [f"{cell}/{a}" for a in ("crasher", "identity-late", "sleepy")]
    assert s.failed == [(f"{cell}/crasher", "the worker process died (killed, or out of memory) while this ran")]
    df = results_table(out).set_index("label")
    assert df["status"].to_dict() == {"identity": "done", "sleepy": "done", "identity-late": "done", "crasher": "failed"}
    assert (df.loc[["sleepy", "identity-late"], "runs_before_in_process"] == 0).all()     # a fresh process per run


def test_sigkilled_driver_takes_its_workers_with_it(tmp_path, plugin):
    """SIGKILL of the sweep driver alone (no handler can run): its worker processes notice
    and exit instead of running on as orphans, and so does multiprocessing's resource tracker."""
    f = _write(tmp_path / "kill9.toml", f"""
        recipe = "faces"
        seeds = [1]
        imports = ["{plugin['module']}"]
        [grid]
        n_priv = [4]
        T = [2]
        pool_screen = [12]
        [[attack]]
        name = "sleepy"
        """)
    out = tmp_path / "S"
    plugin["block"].touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin["dir"]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "hidebench", "sweep", str(f), "--out", str(out), "--workers", "1",
                             "--threads", "1", "--quiet"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = None
    try:
        for _ in range(1500):
            status = next(out.rglob(RUN_STATUS), None) if out.is_dir() else None
            if status is not None or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert status is not None and proc.poll() is None
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        worker = json.loads(status.read_text())["pid"]
        assert worker in children
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for _ in range(100):
            if not any(_alive(c) for c in children):
                break
            time.sleep(0.1)
        assert not any(_alive(c) for c in children), "processes outlived their SIGKILLed sweep driver"
    finally:
        plugin["block"].unlink(missing_ok=True)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ----------------------------------------------------------------------------- Carlini, Ray, report

CARLINI_SWEEP = f"""
    name = "tiny-carlini"
    recipe = "faces"
    seeds = [1, 2]
    [grid]
    n_priv = [8, 12]
    T = [4]
    pool_screen = [40]
    [[attack]]
    name = "identity"
    [[attack]]
    name = "carlini"
    config = {TINY_CARLINI}
    """


@pytest.fixture(scope="module")
def carlini_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("carlini-sweep")
    f = _write(root / "tiny.toml", CARLINI_SWEEP)
    out = root / "S"
    s = run_sweep(f, out, workers=0, threads=1, ctx=CTX, progress=False, echo=None)
    assert s.done == 8 and not s.failed
    return root, f, out


def test_sweep_report(carlini_sweep, tmp_path, capsys):
    root, _, out = carlini_sweep
    assert main(["report", str(out), "--out", str(tmp_path / "R")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'R' / 'index.html'}"
    files = {p.name for p in (tmp_path / "R").iterdir()}
    assert {"index.html", "results.csv", "leaderboard.csv", "scaling_fits.csv", "scaling_time.png",
            "scaling_memory.png", *(f"quality_{m}.png" for m in ("Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2"))} <= files
    assert len([n for n in files if n.startswith("gallery_")]) == 4                     # 2 attacks x 2 settings
    assert len([n for n in files if n.startswith("privateset_")]) == 2                  # carlini recovers a set
    assert not any(n.startswith("phase_") for n in files)                               # T is not swept
    fits = pd.read_csv(tmp_path / "R" / "scaling_fits.csv")
    carlini = fits[(fits["label"] == "carlini") & (fits["quantity"] == "time")]
    assert {"total", "grouping", "regression", "grouping.clustering", "regression.sign_sync",
            "regression.altmin"} <= set(carlini["stage"])                               # per stage and step
    assert (carlini["runs"] == 4).all() and carlini["ci_low"].notna().all()             # 2 sizes x 2 seeds
    board = pd.read_csv(tmp_path / "R" / "leaderboard.csv")
    assert set(board["label"]) == {"identity", "carlini"} and (board["oracles"] == "none").all()
    assert board["threat"].str.contains("aux lfw\\[1::2\\]").all()
    html = (tmp_path / "R" / "index.html").read_text()
    assert "Every feasible run finished" in html and "arXiv:2011.05315" in html and "quality_Mean_L2.png" in html
    assert pd.read_csv(tmp_path / "R" / "results.csv").equals(pd.read_csv(out / RESULTS))
    with pytest.raises(HidebenchError, match="the sweep folder itself"):
        build_sweep_report(out, out)


def test_sweep_with_utility_trains_once_per_defense_and_draws_the_frontier(tmp_path):
    """[utility]: one training run per defense setting (cells that differ in n_priv share it) and
    the vanilla reference; accuracies in results.csv, the leaderboard and the frontier; a rerun
    redoes nothing."""
    f = _write(tmp_path / "u.toml", BASE.replace("n_priv = [8]", "n_priv = [8, 10]\n    k = [4, 6]")
               + "[utility]\nepochs = 1\nwidths = [4, 8, 8]\nK = 2\n")
    out = tmp_path / "S"
    s = run_sweep(f, out, workers=0, threads=1, ctx=CTX, progress=False, echo=None)
    assert s.total == 4 + 3 and s.done == 7 and not s.failed
    df = pd.read_csv(out / RESULTS)
    util = df[df["attack"] == "utility"].set_index("run_id")
    assert sorted(util.index.str.split("-").str[:3].str.join("-")) == [
        "utility/instahide-cross-k4", "utility/instahide-cross-k6", "utility/vanilla"]
    assert util["test_accuracy_clean"].between(0, 1).all()
    assert util.loc["utility/vanilla", "test_accuracy_encrypted"] != util.loc["utility/vanilla", "test_accuracy_encrypted"]
    assert df[df["attack"] == "identity"]["n_priv"].tolist() == [8, 8, 10, 10]        # integers, not 8.0
    build_sweep_report(out, tmp_path / "R")
    front = pd.read_csv(tmp_path / "R" / "frontier.csv").set_index("defense")
    assert front.loc["vanilla (no defense)", "best_Max_SSIM"] == 1.0
    ident = df[df["attack"] == "identity"]
    best_k6 = ident[ident["k"] == 6].groupby("n_priv")["Max_SSIM"].mean().max()
    assert front.loc["instahide cross k=6", "best_Max_SSIM"] == pytest.approx(best_k6)
    board = pd.read_csv(tmp_path / "R" / "leaderboard.csv")
    assert board["accuracy"].notna().all()
    assert "privacy/utility frontier" in (tmp_path / "R" / "index.html").read_text()
    again = run_sweep(f, out, workers=0, threads=1, ctx=CTX, progress=False, echo=None)
    assert again.reused == 7 and not again.executed


def test_report_draws_the_phase_diagram_when_n_priv_and_T_vary(tmp_path):
    """A sweep over n_priv x T (x k): the report has a heat map of Max_SSIM per attack, a panel per
    k, and its table, the mean over seeds of every (k, n_priv, T) cell."""
    f = _write(tmp_path / "phase.toml", """
        recipe = "faces"
        seeds = [1, 2]
        [grid]
        n_priv = [4, 6]
        T = [2, 3]
        k = [4, 6]
        pool_screen = [12]
        [[attack]]
        name = "identity"
        """)
    out = tmp_path / "S"
    assert run_sweep(f, out, workers=0, threads=1, ctx=CTX, progress=False, echo=None).done == 16
    report, missing = build_sweep_report(out, tmp_path / "R")
    assert missing == ""
    png = tmp_path / "R" / "phase_Max_SSIM_identity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.name in report.read_text()
    phase = pd.read_csv(tmp_path / "R" / "phase_Max_SSIM.csv")
    assert len(phase) == 8 and (phase["seeds"] == 2).all() and set(phase["label"]) == {"identity"}
    df = pd.read_csv(out / RESULTS)
    want = df.groupby(["k", "n_priv", "T"])["Max_SSIM"].mean()
    got = phase.set_index(["k", "n_priv", "T"])["Max_SSIM"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)


def test_leaderboard_puts_published_anchors_beside_the_challenge_setting():
    rows = [{"label": "carlini", "attack": "carlini", "seed": s, "scheme": "instahide", "mode": "cross", "k": 6, "T": 50,
             "n_priv": n, "private_source": "cifar10:test", "Max_SSIM": v, "Mean_SSIM": 0.4, "Min_L2": 0.06,
             "Mean_L2": 0.28, "time_s": 900.0, "aux": "cifar10:train", "public_pool": True, "oracles": "none"}
            for n, s, v in ((100, 2020, 0.80), (100, 2021, 0.82), (50, 2020, 0.72))]
    board = leaderboard(pd.DataFrame(rows), [])
    at100 = [r for r in board if "n_priv=100" in r["setting"]]
    assert [r["label"] for r in at100] == ["Carlini et al. ver.1 (published)", "carlini",
                                           "Carlini et al. ver.2 (published)"]
    assert [r["rank"] for r in at100] == [1, 2, 3] and at100[1]["seeds"] == 2
    assert at100[1]["Max_SSIM"] == pytest.approx(0.81)
    assert not any(r.get("published") for r in board if "n_priv=50" in r["setting"])
    anchors = load_anchors()
    assert anchors[0].metrics["Max_SSIM"] == 0.90 and anchors[1].metrics["Max_SSIM"] == 0.79


def test_anchors_are_data_files_one_per_entry(tmp_path):
    anchors = load_anchors()
    assert [a.label for a in anchors] == ["Carlini et al. ver.1 (published)", "Carlini et al. ver.2 (published)"]
    challenge = {"scheme": "instahide", "mode": "cross", "k": 6, "T": 50, "n_priv": 100, "private_source": "cifar10:test"}
    assert all(a.matches(challenge) and not a.matches({**challenge, "T": 20}) for a in anchors)
    assert all("arXiv:2011.05315" in a.citation and a.source["url"].startswith("https://") for a in anchors)
    (tmp_path / "bad.json").write_text('{"label": "x", "metrics": {}}')
    with pytest.raises(HidebenchError, match=r"bad\.json lacks .*paper"):
        load_anchors(tmp_path)


def test_fit_loglog_recovers_exponent_with_interval():
    rng = np.random.default_rng(0)
    n = np.repeat([1250, 2500, 5000, 10000], 3).astype(float)
    t = 0.01 * n ** 1.5 * np.exp(rng.normal(0, 0.05, len(n)))
    f = fit_loglog(n, t)
    assert f["exponent"] == pytest.approx(1.5, abs=0.05) and f["ci"][0] < 1.5 < f["ci"][1] and f["sizes"] == 4
    assert fit_loglog([100, 200], [1.0, 4.0])["ci"] is None                # two points: a slope, no interval
    assert fit_loglog([100, 100], [1.0, 2.0]) is None                      # one size: no fit


@pytest.mark.slow
def test_ray_backend_gives_the_same_rows_as_local(carlini_sweep, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    root, f, local = carlini_sweep
    one_cell = _write(tmp_path / "tiny.toml", CARLINI_SWEEP.replace("seeds = [1, 2]", "seeds = [1]")
                      .replace("n_priv = [8, 12]", "n_priv = [8]"))
    monkeypatch.setenv("HIDEBENCH_DATA", str(tmp_path / "not-the-data-root"))    # workers must not read it
    (tmp_path / "root").mkdir()
    ctx = CTX.replace(data_root=str(tmp_path / "root"))
    s = run_sweep(one_cell, tmp_path / "S", backend="ray", workers=1, threads=1, ctx=ctx,
                  progress=False, echo=None)
    assert s.done == 2 and not s.failed
    cols = ["run_id", "attack", "status", "k", "T", "n_priv", "seed", "Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2",
            "private_set.ssim", "stages.grouping.pair_auc"]
    ray_rows = results_table(tmp_path / "S")[cols].reset_index(drop=True)
    local_rows = results_table(local)[cols]
    local_rows = local_rows[(local_rows["seed"] == 1) & (local_rows["n_priv"] == 8)].reset_index(drop=True)
    pd.testing.assert_frame_equal(ray_rows, local_rows)
    rec = load_record(tmp_path / "S" / "runs" / "n_priv=8_T=4_pool_screen=40" / "seed=1" / "carlini" / "record.json")
    assert rec.context["data_root"] == str(tmp_path / "root") and rec.context["threads"] == 1
    assert results_table(tmp_path / "S")["runs_before_in_process"].max() > 0          # the Ray worker was reused
    status = json.loads((tmp_path / "S" / "runs" / "n_priv=8_T=4_pool_screen=40" / "seed=1" / "carlini" /
                         RUN_STATUS).read_text())
    assert status["niceness"] == os.nice(0)            # not Ray's default 15, which starves on a busy machine
    assert rec.context["cache_dir"] == str(tmp_path / "S" / "runs" / "n_priv=8_T=4_pool_screen=40" / "seed=1" /
                                           "carlini" / "cache")


@pytest.mark.parametrize("argv, expect", [(["sweep", "--help"], "sweep file (TOML"),
                                          (["sweep", "faces-quick", "--list"], "sweep faces-quick: recipe faces")])
def test_sweep_start_up_imports_no_torch(argv, expect):
    code = ("import sys\nfrom hidebench.app.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and expect in r.stdout, r.stderr[-2000:]
