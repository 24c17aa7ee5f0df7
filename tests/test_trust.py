"""Trust what you receive: hidebench runs on folders from someone else (a release, a sweep on
shared storage, a model cache, a run folder, a data root), so

* no file it reads is unpickled: a planted pickle that would write a marker file never runs,
  for every kind of file (challenge arrays, key files, stage cache, model cache, utility
  checkpoint, sweep records, decryptions, data sources);
* the key stays private (owner-only modes, nothing derived from it beside the public files,
  no key left in a staging folder) and is verified before it scores anything;
* commands delete only what hidebench wrote.

CLI cases run `python -m hidebench` in a subprocess, as a user would.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hidebench.challenge_io import load_key

REPO = Path(__file__).resolve().parents[1]
FAST_CARLINI = ["--set", 'similarity.method="pearson"', "--set", "reassignment.rounds=0", "--set",
                "regression.steps=10", "--set", "regression.adam_steps=10", "--set", 'prior.decoder="none"']


class Planted:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def planted_bytes(marker: Path, kind: str) -> bytes:
    """A file of `kind` whose loading with pickle enabled would write `marker`."""
    buf = io.BytesIO()
    evil = np.array([Planted(marker)], dtype=object)
    if kind == "npy":
        np.save(buf, evil, allow_pickle=True)
    elif kind == "npz":
        np.savez(buf, x=evil, y=evil)
    elif kind == "pt":
        import torch

        torch.save({"digest": "x", "model": Planted(marker)}, buf)
    else:
        pickle.dump({"data": Planted(marker)}, buf)
    return buf.getvalue()


def cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e.pop("HIDEBENCH_DATA", None)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "hidebench", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=timeout, check=False)


def one_error(p: subprocess.CompletedProcess, match: str | None = None) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("hidebench: error:")]
    assert p.returncode == 2 and len(errors) == 1, (p.returncode, p.stderr)
    if match:
        assert match in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "ch"
    p = cli("challenge", "generate", "faces", "--n-priv", "6", "--T", "2", "--pool-screen", "12", "--out", out,
            "--quiet")
    assert p.returncode == 0, p.stderr
    return out


def _rehash_key(ch: Path, name: str) -> None:
    """Record key/NAME's current sha256 in key/manifest.json (an attacker controls the whole
    folder, manifests included)."""
    km = json.loads((ch / "key" / "manifest.json").read_text())
    km["files"][f"key/{name}"] = hashlib.sha256((ch / "key" / name).read_bytes()).hexdigest()
    (ch / "key" / "manifest.json").write_text(json.dumps(km))


def _rehash_public(ch: Path, name: str) -> None:
    m = json.loads((ch / "manifest.json").read_text())
    m["files"][name] = hashlib.sha256((ch / name).read_bytes()).hexdigest()
    (ch / "manifest.json").write_text(json.dumps(m))
    km = json.loads((ch / "key" / "manifest.json").read_text())
    km["files"]["manifest.json"] = hashlib.sha256((ch / "manifest.json").read_bytes()).hexdigest()
    (ch / "key" / "manifest.json").write_text(json.dumps(km))


# ----------------------------------------------------------------------------- 1. no code runs from a received file

def _plant_public(name):
    def setup(tmp, ch, marker):
        (ch / name).write_bytes(planted_bytes(marker, "npy"))
        _rehash_public(ch, name)
        return ["attack", "identity", "--challenge", ch, "--out", tmp / "out"]
    return setup


def _plant_key(name):
    def setup(tmp, ch, marker):
        (ch / "key" / name).write_bytes(planted_bytes(marker, "npy"))
        _rehash_key(ch, name)
        dec = tmp / "d.npy"
        np.save(dec, np.zeros((12, 32, 32, 3), np.float32))
        return ["score", "--challenge", ch, "--decryption", dec]
    return setup


def _plant_decryption(tmp, ch, marker):
    (tmp / "d.npy").write_bytes(planted_bytes(marker, "npy"))
    return ["score", "--challenge", ch, "--decryption", tmp / "d.npy"]


def _plant_npz_source(tmp, ch, marker):
    (tmp / "src.npz").write_bytes(planted_bytes(marker, "npz"))
    return ["challenge", "generate", "faces", "--private-source", f"npz:{tmp / 'src.npz'}", "--out", tmp / "out"]


def _plant_cifar_batches(tmp, ch, marker):
    d = tmp / "root" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in ("test_batch", "batches.meta"):
        (d / name).write_bytes(planted_bytes(marker, "pickle"))
    return ["challenge", "generate", "faces", "--private-source", "cifar10:test", "--data-root", tmp / "root",
            "--out", tmp / "out"]


def _plant_checkpoint(tmp, ch, marker):
    (tmp / "U").mkdir()
    (tmp / "U" / "checkpoint.pt").write_bytes(planted_bytes(marker, "pt"))
    return ["utility", "faces", "--out", tmp / "U", "--epochs", "1", "--quiet"]


def _plant_record(tmp, ch, marker):
    (tmp / "runs" / "a").mkdir(parents=True)
    (tmp / "runs" / "a" / "record.json").write_bytes(planted_bytes(marker, "pickle"))
    return ["report", tmp / "runs", "--out", tmp / "rep"]


PLANTED = {"challenge encryption.npy": _plant_public("encryption.npy"),
           "challenge label.npy": _plant_public("label.npy"),
           **{f"key {n}": _plant_key(n) for n in ("private.npy", "selection.npy", "lambda.npy", "sign.npy",
                                                  "private_label.npy")},
           "decryption": _plant_decryption, "npz data source": _plant_npz_source,
           "CIFAR-10 batches in a data root": _plant_cifar_batches, "utility checkpoint": _plant_checkpoint,
           "run record": _plant_record}


@pytest.mark.parametrize("kind", list(PLANTED))
def test_planted_pickle_never_runs_from_the_cli(kind, challenge, tmp_path):
    ch = tmp_path / "ch"
    shutil.copytree(challenge, ch)
    marker = tmp_path / "MARKER"
    args = PLANTED[kind](tmp_path, ch, marker)
    p = cli(*args, cwd=tmp_path)
    assert not marker.exists(), f"a planted pickle in the {kind} ran its code"
    one_error(p)


def test_planted_pickle_in_the_stage_cache_is_recomputed(challenge, tmp_path):
    """A stage-cache entry whose arrays are a planted pickle (its manifest's sha256 made to
    match) is reported corrupt and recomputed; the run's figures are those of a clean run."""
    args = ["attack", "carlini", "--challenge", challenge, "--aux", "none", "--quiet", *FAST_CARLINI]
    clean = cli(*args, "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    cache = tmp_path / "clean" / "cache"
    marker = tmp_path / "MARKER"
    for stage in ("grouping", "regression"):
        blob = planted_bytes(marker, "npz")
        (cache / stage / "arrays.npz").write_bytes(blob)
        m = json.loads((cache / stage / "manifest.json").read_text())
        m["arrays_sha256"] = hashlib.sha256(blob).hexdigest()
        (cache / stage / "manifest.json").write_text(json.dumps(m))
    again = cli(*args, "--out", tmp_path / "again", "--cache", cache)
    assert again.returncode == 0, again.stderr
    assert not marker.exists()
    assert again.stderr.count("is corrupt") == 2 and "Traceback" not in again.stderr
    rec = [json.loads((tmp_path / d / "record.json").read_text())["metrics"]["challenge"] for d in ("clean", "again")]
    assert rec[0] == rec[1]


def test_planted_pickle_in_the_model_cache_is_retrained(tmp_path, capsys):
    """A model-cache entry whose weights are a planted pickle (sha256 made to match) is
    reported in one line and retrained."""
    from hidebench.model_cache import ModelCache

    cache = ModelCache(tmp_path / "models")
    spec = {"scheme": "x"}
    d = cache.store("net", spec, {"w": __import__("torch").zeros(2)}, {"train_s": 1.0})
    marker = tmp_path / "MARKER"
    blob = planted_bytes(marker, "pt")
    (d / "weights.pt").write_bytes(blob)
    m = json.loads((d / "manifest.json").read_text())
    m["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))
    assert cache.load("net", spec) is None and not marker.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is corrupt" in err and "retraining" in err


def test_planted_pickle_in_sweep_records(tmp_path):
    """A sweep folder whose run status and record are planted pickles: the runs count as
    failed (not done), nothing runs, and --retry-failed redoes them."""
    from hidebench.app.sweep import results_table, run_sweep
    from hidebench.context import ExecutionContext

    f = tmp_path / "s.toml"
    f.write_text('recipe = "faces"\nseeds = [1]\n[grid]\nn_priv = [4]\nT = [2]\npool_screen = [12]\n'
                 '[[attack]]\nname = "identity"\n[[attack]]\nname = "identity"\nlabel = "again"\n')
    ctx = ExecutionContext(device="cpu", progress=False)
    out = tmp_path / "S"
    assert not run_sweep(f, out, workers=0, threads=1, ctx=ctx, progress=False, echo=None).failed
    marker = tmp_path / "MARKER"
    runs = sorted(p.parent for p in out.rglob("record.json"))
    (runs[0] / "record.json").write_bytes(planted_bytes(marker, "pickle"))
    (runs[1] / "sweep_run.json").write_bytes(planted_bytes(marker, "pickle"))
    df = results_table(out)
    assert list(df["status"]) == ["failed", "failed"] and not marker.exists()
    s = run_sweep(f, out, workers=0, threads=1, ctx=ctx, progress=False, echo=None)
    assert len(s.failed) == 2 and not s.executed
    s = run_sweep(f, out, workers=0, threads=1, retry_failed=True, ctx=ctx, progress=False, echo=None)
    assert not s.failed and len(s.executed) == 2
    assert list(results_table(out)["status"]) == ["done", "done"] and not marker.exists()


def test_sweep_imports_run_only_when_the_sweep_runs(tmp_path):
    """`imports` is code: listing and validating a sweep never imports it; running does."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "side_effect_mod.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    f = tmp_path / "s.toml"
    f.write_text('recipe = "faces"\nseeds = [1]\nimports = ["side_effect_mod"]\n[grid]\nn_priv = [4]\nT = [2]\n'
                 'pool_screen = [12]\n[[attack]]\nname = "identity"\n[[attack]]\nname = "plugin_attack"\n')
    env = {"PYTHONPATH": str(tmp_path)}
    p = cli("sweep", f, "--list", env=env)
    assert p.returncode == 0, p.stderr
    assert not marker.exists()
    assert "not checked: plugin_attack" in p.stdout and "code" in p.stdout
    p = cli("sweep", "--help")
    assert "script" in p.stdout and "imports" in p.stdout
    p = cli("sweep", f, "--out", tmp_path / "S", "--workers", "0", "--quiet", env=env)
    assert marker.exists()                                 # runs import it...
    one_error(p, "unknown attack 'plugin_attack'")         # ...and then check what it registers


# ----------------------------------------------------------------------------- 2. the key stays private and verified

def test_key_folder_is_owner_only(challenge, tmp_path):
    kd = challenge / "key"
    assert stat.S_IMODE(kd.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in kd.iterdir()} == {0o600}
    # an imported key too
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("encryption.npy", "label.npy"):
        shutil.copy(challenge / f, bare)
    key = load_key(challenge)
    np.save(tmp_path / "p.npy", key.private)
    np.save(tmp_path / "s.npy", key.selection[:, :2])
    p = cli("key", "import", bare, "--private", tmp_path / "p.npy", "--selection", tmp_path / "s.npy")
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE((bare / "key").stat().st_mode) == 0o700
    assert {stat.S_IMODE(q.stat().st_mode) for q in (bare / "key").iterdir()} == {0o600}
    # an honest minimal key scores (its own manifest is written by the import)
    np.save(tmp_path / "d.npy", key.private[key.selection[:, 0]])
    p = cli("score", "--challenge", bare, "--decryption", tmp_path / "d.npy", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["challenge"]["Max_SSIM"] == pytest.approx(1.0)


def _true_decryption(ch: Path, tmp: Path) -> Path:
    key = load_key(ch)
    np.save(tmp / "d.npy", key.private[key.selection[:, 0]])
    return tmp / "d.npy"


def test_score_refuses_a_key_that_does_not_match_its_manifest(challenge, tmp_path):
    """Swapping private.npy and selection.npy for ones that make a chosen decryption perfect
    is refused, as is a key without its manifest and a public file changed after writing."""
    ch = tmp_path / "ch"
    shutil.copytree(challenge, ch)
    fake = np.zeros((12, 32, 32, 3), np.float32)
    np.save(tmp_path / "fake.npy", fake)
    np.save(ch / "key" / "private.npy", fake[:6])
    np.save(ch / "key" / "selection.npy", np.stack([np.arange(12) % 6, (np.arange(12) + 1) % 6], 1))
    one_error(cli("score", "--challenge", ch, "--decryption", tmp_path / "fake.npy"), "does not match")
    shutil.rmtree(ch)
    shutil.copytree(challenge, ch)
    (ch / "key" / "manifest.json").unlink()
    one_error(cli("score", "--challenge", ch, "--decryption", _true_decryption(challenge, tmp_path)), "missing")
    shutil.rmtree(ch)
    shutil.copytree(challenge, ch)
    np.save(ch / "label.npy", np.load(ch / "label.npy")[:, ::-1])
    one_error(cli("score", "--challenge", ch, "--decryption", tmp_path / "d.npy"), "label.npy does not match")
    assert cli("score", "--challenge", challenge, "--decryption", tmp_path / "d.npy").returncode == 0


def test_show_writes_under_key_and_verify_flags_foreign_files(challenge, tmp_path):
    ch = tmp_path / "ch"
    shutil.copytree(challenge, ch)
    p = cli("challenge", "show", ch)
    assert p.returncode == 0, p.stderr
    assert (ch / "key" / "show.png").is_file() and not (ch / "show.png").exists()
    assert stat.S_IMODE((ch / "key" / "show.png").stat().st_mode) == 0o600
    one_error(cli("challenge", "show", ch, "--out", ch / "show.png"), "public part")
    assert cli("challenge", "verify", ch, "--quiet").returncode == 0
    shutil.copy(ch / "key" / "show.png", ch / "show.png")        # a user copying it beside the release
    p = cli("challenge", "verify", ch, "--quiet")
    assert p.returncode == 1 and "FOREIGN" in p.stderr and "show.png" in p.stderr


def test_a_killed_generation_leaves_no_key_behind(tmp_path):
    """A staging folder left by a generation killed mid-write (it holds the key) is removed by
    the next successful write of the same folder."""
    stale = tmp_path / ".ch.deadbeef.partial" / "key"
    stale.mkdir(parents=True)
    np.save(stale / "private.npy", np.zeros((2, 32, 32, 3), np.float32))
    old = tmp_path / ".ch.cafef00d.old"
    old.mkdir()
    p = cli("challenge", "generate", "faces", "--n-priv", "4", "--T", "2", "--pool-screen", "12", "--out",
            tmp_path / "ch", "--quiet")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ch"]


# ----------------------------------------------------------------------------- 4. commands delete only what hidebench wrote

def test_overwrite_replaces_only_a_release(challenge, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    (mine / "encryption.npy").write_bytes((challenge / "encryption.npy").read_bytes())
    p = cli("challenge", "generate", "faces", "--n-priv", "4", "--T", "2", "--pool-screen", "12", "--out", mine,
            "--overwrite", "--quiet")
    one_error(p, "thesis.tex")
    assert (mine / "thesis.tex").read_text() == "years of work\n"
    ch = tmp_path / "ch"
    shutil.copytree(challenge, ch)
    cli("challenge", "show", ch)                                  # key/show.png belongs to a release
    p = cli("challenge", "generate", "faces", "--n-priv", "4", "--T", "2", "--pool-screen", "12", "--out", ch,
            "--overwrite", "--quiet")
    assert p.returncode == 0, p.stderr
    assert len(np.load(ch / "encryption.npy")) == 8


def test_models_rm_all_removes_only_model_entries(tmp_path):
    import torch

    from hidebench.model_cache import ModelCache

    d = tmp_path / "models"
    ModelCache(d).store("net", {"a": 1}, {"w": torch.zeros(1)}, {})
    for name in ("photos", "net-0123456789abcdef"):          # not entries: no manifest of a model
        (d / name).mkdir()
        (d / name / "keep.txt").write_text("mine\n")
    (d / "net-0123456789abcdef" / "manifest.json").write_text('{"name": "net"}')
    p = cli("models", "rm", "--all", "--model-dir", d)
    assert p.returncode == 0 and "removed 1 model" in p.stdout, p.stderr
    assert sorted(x.name for x in d.iterdir()) == ["net-0123456789abcdef", "photos"]
    one_error(cli("models", "rm", "photos", "--model-dir", d), "photos")
    assert (d / "photos" / "keep.txt").is_file()


# ----------------------------------------------------------------------------- 3. hostile inputs the Python API meets

def _malformed(arrays: dict, name: str, value):
    out = dict(arrays)
    out[name] = value
    return out


@pytest.mark.parametrize("damage", ["json-not-json", "json-wrong-kind", "index-out-of-range", "wrong-shape",
                                    "missing-field"])
def test_malformed_but_hash_consistent_cache_entries_are_recomputed(tmp_path, damage, capsys):
    """Entries that hash as their manifest records but hold what the stage cannot use (a JSON
    field that is not JSON, or of another kind; group ids beyond the groups; arrays of the
    wrong shape; a field missing) are reported in one line and recomputed."""
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe
    from hidebench.threat import ReleaseThreatModel

    ch = tmp_path / "ch"
    generate_to_dir(load_recipe("faces", {"n_priv": 6, "T": 2, "pool_screen": 12}), ch, seed=3, progress=False)
    ctx = ExecutionContext(device="cpu", progress=False, cache_dir=str(tmp_path / "cache"))
    cfg = {"similarity": {"method": "pearson"}, "reassignment": {"rounds": 0}, "prior": {"decoder": "none"},
           "regression": {"steps": 10, "adam_steps": 10}}
    threat = ReleaseThreatModel(aux=None)
    first = run_release_attack("carlini", ch, tmp_path / "a", config=cfg, threat=threat, ctx=ctx)
    entry = tmp_path / "cache" / "grouping"
    with np.load(entry / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays = {"json-not-json": lambda a: _malformed(a, "stats", np.asarray("{not json")),
              "json-wrong-kind": lambda a: _malformed(a, "stats", np.asarray("[1, 2]")),
              "index-out-of-range": lambda a: _malformed(a, "assignment", a["assignment"] + 1000),
              "wrong-shape": lambda a: _malformed(a, "assignment", a["assignment"][:, :1]),
              "missing-field": lambda a: {k: v for k, v in a.items() if k != "assignment"}}[damage](arrays)
    np.savez(entry / "arrays.npz", **arrays)
    m = json.loads((entry / "manifest.json").read_text())
    m["arrays_sha256"] = hashlib.sha256((entry / "arrays.npz").read_bytes()).hexdigest()
    (entry / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    again = run_release_attack("carlini", ch, tmp_path / "b", config=cfg, threat=threat, ctx=ctx)
    err = capsys.readouterr().err
    assert "cache entry" in err and "is corrupt" in err and "recomputing stage grouping" in err
    assert again.metrics["challenge"] == first.metrics["challenge"]
