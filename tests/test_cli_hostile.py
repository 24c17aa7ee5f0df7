"""Hostile input to the command line: every bad input ends with exactly one
`hidebench: error: ...` line on stderr, exit status 2, no traceback, and leaves the output
folder as it was (no file removed or changed, nothing half-written).

Cases marked SUB run `python -m hidebench` in a subprocess (the real entry point, and the
only place a traceback really shows); the others call `hidebench.app.cli.main` in-process, which
exercises the same code without ~2 s of Python and torch start-up each.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hidebench.app.cli import main

REPO = Path(__file__).resolve().parents[1]
SENTINEL = "keep-me.txt"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> Path:
    """One small generated challenge shared by every case (8 encryptions of 4 faces)."""
    out = tmp_path_factory.mktemp("hostile") / "ch"
    assert main(["challenge", "generate", "faces", "--n-priv", "4", "--T", "2", "--pool-screen", "12",
                 "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def decryption(challenge) -> np.ndarray:
    """A valid decryption of the shared challenge (the true private images)."""
    from hidebench.challenge_io import load_key

    key = load_key(challenge)
    return key.private[key.selection[:, 0]].astype(np.float32)


def snapshot(folder: Path) -> dict | None:
    """Every file under folder (relative path -> sha256); a plain file: its own hash; None: absent."""
    if not folder.exists():
        return None
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- setups
# Each setup gets the case's tmp folder, the shared challenge and a valid decryption, and
# writes the hostile files the case's arguments name ({tmp}/..., {ch} the shared challenge).

def _save(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=True)


def _dec(name: str, make: Callable[[np.ndarray], np.ndarray]):
    def setup(tmp, ch, dec):
        _save(tmp / name, make(dec))
    return setup


def _text(name: str, text: str = "this is not a numpy file\n"):
    def setup(tmp, ch, dec):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return setup


def _npz(**arrays):
    def setup(tmp, ch, dec):
        np.savez(tmp / "src.npz", **{k: (v() if callable(v) else v) for k, v in arrays.items()})
    return setup


def _copy_ch(mutate: Callable[[Path], None] | None = None):
    """A copy of the shared challenge in {tmp}/ch, mutated."""
    def setup(tmp, ch, dec):
        shutil.copytree(ch, tmp / "ch")
        if mutate:
            mutate(tmp / "ch")
    return setup


def _enc(make):
    return _copy_ch(lambda d: np.save(d / "encryption.npy", make(np.load(d / "encryption.npy"))))


def _nan_enc(e):
    e = e.copy()
    e[0, 0, 0, 0] = np.nan
    return e


GOOD_RECORD = {"schema_version": 1, "attack": "identity", "family": "release", "config": {}, "threat_model": {},
               "oracles": [], "seed": 0, "setting": {"n_priv": 4}, "metrics": {}, "timings": {"total_s": 0.1}}


def _record(rec) -> Callable:
    def setup(tmp, ch, dec):
        (tmp / "runs" / "a").mkdir(parents=True)
        (tmp / "runs" / "a" / "record.json").write_text(rec if isinstance(rec, str) else json.dumps(rec))
    return setup


def _recipe(text: str):
    return _text("r.toml", text)


def _existing_challenge(tmp, ch, dec):
    shutil.copytree(ch, tmp / "out", dirs_exist_ok=True)


def _existing_file(tmp, ch, dec):
    (tmp / "out").write_text("an existing file, not a folder\n")


def _corrupt_manifest(d: Path):
    (d / "manifest.json").write_text("{ not json")


def _manifest_k(value):
    def mutate(d: Path):
        m = json.loads((d / "manifest.json").read_text())
        m["scheme"]["k"] = value
        (d / "manifest.json").write_text(json.dumps(m))
    return mutate


def _manifest_field(name, value):
    def mutate(d: Path):
        m = json.loads((d / "manifest.json").read_text())
        m[name] = value
        (d / "manifest.json").write_text(json.dumps(m))
    return mutate


def _scheme_field(name, value):
    def mutate(d: Path):
        m = json.loads((d / "manifest.json").read_text())
        m["scheme"][name] = value
        (d / "manifest.json").write_text(json.dumps(m))
    return mutate


def _npy_claiming(shape) -> bytes:
    """A 200-byte .npy file whose header declares `shape` (float32)."""
    import numpy.lib.format as fmt

    buf = io.BytesIO()
    fmt.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * max(0, 200 - len(buf.getvalue()))


def _cifar_batches(blob: bytes | None):
    """A data root whose cifar-10-batches-py holds `blob` (None: a pickle of the wrong content)."""
    def setup(tmp, ch, dec):
        d = tmp / "root" / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for name in ("test_batch", "batches.meta"):
            (d / name).write_bytes(blob if blob is not None else pickle.dumps({b"data": [1, 2], b"labels": "x"}))
    return setup


def _swap_key(d: Path) -> None:
    """private.npy and selection.npy replaced so that an all-zero decryption would score 1.0."""
    n = len(np.load(d / "key" / "private.npy"))
    E = len(np.load(d / "encryption.npy"))
    np.save(d / "key" / "private.npy", np.zeros((n, 32, 32, 3), np.float32))
    np.save(d / "key" / "selection.npy", np.stack([np.arange(E) % n, (np.arange(E) + 1) % n], 1))


RECIPE_OK = 'name = "r"\n[private]\nsource = "lfw"\nn_priv = 4\n[scheme]\nT = 2\n[pool]\nsource = "photos"\n'


# ----------------------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    args: list[str]
    setup: Callable | None = None
    sub: bool = False                 # run as a subprocess
    out: str | None = None            # folder (relative to tmp) that must be left as it was
    precreate: bool = True            # out holds a sentinel file before the run
    match: str | None = None          # regex the error line must match
    data_env: bool = False            # keep HIDEBENCH_DATA (a real data root) for this case
    other: str = ""                   # owned by another engineer's fix (see the report)


GEN = ["challenge", "generate"]
SCORE = ["score", "--challenge", "{ch}", "--decryption"]
ID = ["attack", "identity", "--challenge"]
CARL = ["attack", "carlini", "--challenge", "{ch}", "--out", "{tmp}/out"]
GRAD = ["attack", "inverting_gradients", "--out", "{tmp}/out"]

CASES = [
    # --- reported faults: score
    Case("score-decryption-text-file", SCORE + ["{tmp}/d.npy"], _text("d.npy"), sub=True, match="not a .npy file"),
    Case("score-decryption-object-array", SCORE + ["{tmp}/d.npy"],
         _dec("d.npy", lambda d: np.array([1, "a", None], dtype=object)), sub=True, match="Python objects"),
    Case("score-recovered-missing", SCORE + ["{tmp}/d.npy", "--recovered", "{tmp}/nope.npy"],
         _dec("d.npy", lambda d: d), sub=True, match="does not exist"),
    # --- reported faults: data sources
    Case("source-slice-step-0", GEN + ["faces", "--private-source", "lfw[::0]", "--out", "{tmp}/out"],
         sub=True, out="out", precreate=False, match="step"),
    Case("npz-not-a-zip", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _text("src.npz"), sub=True, out="out", precreate=False, match="not a zip"),
    Case("npz-all-nan", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--n-priv", "4", "--T", "2",
                               "--out", "{tmp}/out"],
         _npz(x=np.full((6, 32, 32, 3), np.nan, np.float32), y=np.zeros(6, np.int64)),
         sub=True, out="out", precreate=False, match="NaN"),
    # --- reported faults: --out naming a file
    Case("identity-out-is-a-file", ID + ["{ch}", "--out", "{tmp}/out"], _existing_file, sub=True, out="out",
         match="existing file"),
    Case("report-out-is-a-file", ["report", "{tmp}/runs", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (_record(GOOD_RECORD)(tmp, ch, dec), _existing_file(tmp, ch, dec)),
         sub=True, out="out", match="existing file"),
    # --- reported faults: the metric refuses integer decryptions
    Case("score-integer-decryption", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: (d * 100).astype(np.int64)),
         sub=True, match="float"),
    # --- reported faults: a string where a number is expected (recipe file and --set)
    Case("recipe-T-is-a-string", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK.replace("T = 2", 'T = "5"')), sub=True, out="out", precreate=False, match="'5'"),
    # --- reported faults: report on a JSON file that is not a run record
    Case("report-not-a-record", ["report", "{tmp}/x.json", "--out", "{tmp}/out"], _text("x.json", '{"a": 1}'),
         sub=True, out="out", match="x.json.*not a run record"),
    # --- owned by the other engineer (challenge_io / hidebench.defenses.challenge), subprocess
    Case("encryption-npy-is-text", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: (d / "encryption.npy").write_text("not an array\n")), sub=True, out="out",
         other="challenge_io._load_npy"),
    Case("show-out-in-missing-folder", ["challenge", "show", "{ch}", "--out", "{tmp}/nowhere/x/show.png"],
         sub=True, out="nowhere", precreate=False, other="hidebench.defenses.challenge.show"),
    Case("show-rows-0", ["challenge", "show", "{tmp}/ch", "--rows", "0"], _copy_ch(), sub=True, out="ch",
         precreate=False, other="hidebench.defenses.challenge.show"),
    Case("show-rows-negative", ["challenge", "show", "{tmp}/ch", "--rows", "-2"], _copy_ch(), out="ch",
         precreate=False, other="hidebench.defenses.challenge.show"),
    Case("generate-out-is-a-file", GEN + ["faces", "--n-priv", "4", "--T", "2", "--pool-screen", "12",
                                          "--out", "{tmp}/out", "--quiet"], _existing_file, sub=True, out="out",
         other="hidebench.defenses.challenge.generate_to_dir"),
    Case("generate-seed-negative", GEN + ["faces", "--seed", "-1", "--out", "{tmp}/out"], out="out", precreate=False,
         other="hidebench.defenses.challenge.generate"),

    # --- score: more bad decryptions
    Case("score-decryption-missing", SCORE + ["{tmp}/nope.npy"], match="does not exist"),
    Case("score-decryption-is-a-folder", SCORE + ["{tmp}"], match="not a file"),
    Case("score-decryption-empty-file", SCORE + ["{tmp}/d.npy"], _text("d.npy", "")),
    Case("score-decryption-truncated", SCORE + ["{tmp}/d.npy"],
         lambda tmp, ch, dec: (tmp / "d.npy").write_bytes(_npy_bytes(dec)[:300])),
    Case("score-decryption-npz", SCORE + ["{tmp}/d.npz"], lambda tmp, ch, dec: np.savez(tmp / "d.npz", d=dec),
         match="npz"),
    Case("score-decryption-wrong-count", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d[:-1]), match="shape"),
    Case("score-decryption-wrong-size", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d[:, :16, :16]),
         match="shape"),
    Case("score-decryption-3d", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d[..., 0]), match="shape"),
    Case("score-decryption-grey", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d[..., :1]), match="shape"),
    Case("score-decryption-nan", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: _nan_enc(d)), match="NaN"),
    Case("score-decryption-inf", SCORE + ["{tmp}/d.npy"],
         _dec("d.npy", lambda d: np.where(np.arange(d.size).reshape(d.shape) == 5, np.inf, d)), match="infinite"),
    Case("score-decryption-bool", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d > 0), match="dtype"),
    Case("score-decryption-complex", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: d + 0j), match="dtype"),
    Case("score-decryption-uint8", SCORE + ["{tmp}/d.npy"],
         _dec("d.npy", lambda d: np.round((d + 1) * 127.5).astype(np.uint8)), match="float"),
    Case("score-decryption-strings", SCORE + ["{tmp}/d.npy"], _dec("d.npy", lambda d: np.full(d.shape, "a")),
         match="dtype"),
    Case("score-recovered-wrong-size", SCORE + ["{tmp}/d.npy", "--recovered", "{tmp}/r.npy"],
         lambda tmp, ch, dec: (_save(tmp / "d.npy", dec), _save(tmp / "r.npy", dec[:, :16, :16])), match="shape"),
    Case("score-recovered-nan", SCORE + ["{tmp}/d.npy", "--recovered", "{tmp}/r.npy"],
         lambda tmp, ch, dec: (_save(tmp / "d.npy", dec), _save(tmp / "r.npy", _nan_enc(dec))), match="NaN"),
    Case("score-recovered-integer", SCORE + ["{tmp}/d.npy", "--recovered", "{tmp}/r.npy"],
         lambda tmp, ch, dec: (_save(tmp / "d.npy", dec), _save(tmp / "r.npy", dec.astype(np.int32))), match="float"),
    Case("score-recovered-empty", SCORE + ["{tmp}/d.npy", "--recovered", "{tmp}/r.npy"],
         lambda tmp, ch, dec: (_save(tmp / "d.npy", dec), _save(tmp / "r.npy", dec[:0])), match="no images"),
    Case("score-challenge-missing", ["score", "--challenge", "{tmp}/nope", "--decryption", "{tmp}/d.npy"],
         _dec("d.npy", lambda d: d), match="does not exist"),
    Case("score-challenge-without-key", ["score", "--challenge", "{tmp}/ch", "--decryption", "{tmp}/d.npy"],
         lambda tmp, ch, dec: (_copy_ch(lambda d: shutil.rmtree(d / "key"))(tmp, ch, dec), _save(tmp / "d.npy", dec)),
         match="key"),

    # --- challenge generate: recipes and overrides
    Case("unknown-recipe", GEN + ["nosuchrecipe", "--out", "{tmp}/out"], out="out", precreate=False,
         match="unknown recipe"),
    Case("recipe-file-missing", GEN + ["{tmp}/missing.toml", "--out", "{tmp}/out"], match="does not exist"),
    Case("recipe-unknown-key", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK.replace("n_priv = 4", "n_priv = 4\ncolour = 1")), match="private.colour"),
    Case("recipe-unknown-section", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"], _recipe(RECIPE_OK + "[extra]\na = 1\n"),
         match="extra"),
    Case("recipe-invalid-toml", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"], _recipe("name = \n[[["),
         match="TOML"),
    Case("recipe-without-name", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK.replace('name = "r"\n', "")), match="name"),
    Case("recipe-negative-seed", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"], _recipe("seed = -3\n" + RECIPE_OK),
         match="seed"),
    Case("recipe-c1-string", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK.replace("T = 2", 'T = 2\nc1 = "high"')), match="'high'"),
    Case("recipe-section-not-a-table", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe('name = "r"\nscheme = 5\n'), match="table"),
    Case("n-priv-negative", GEN + ["faces", "--n-priv", "-3", "--out", "{tmp}/out"], match="n_priv"),
    Case("n-priv-zero", GEN + ["faces", "--n-priv", "0", "--out", "{tmp}/out"], match="n_priv"),
    Case("n-priv-not-a-number", GEN + ["faces", "--n-priv", "many", "--out", "{tmp}/out"], match="invalid int"),
    Case("n-priv-above-source", GEN + ["faces", "--n-priv", "1000", "--out", "{tmp}/out"], out="out",
         precreate=False, match="only"),
    Case("k-1", GEN + ["faces", "--k", "1", "--out", "{tmp}/out"], match="k"),
    Case("k-2-cross", GEN + ["faces", "--k", "2", "--out", "{tmp}/out"], match="k >= 3"),
    Case("k-above-images-inside", GEN + ["faces", "--mode", "inside", "--k", "6", "--n-priv", "3", "--T", "2",
                                         "--out", "{tmp}/out"], match="k=6"),
    Case("c1-too-small", GEN + ["faces", "--c1", "0.1", "--out", "{tmp}/out"], match="infeasible"),
    Case("c1-above-1", GEN + ["faces", "--c1", "1.5", "--out", "{tmp}/out"], match="c1"),
    Case("c2-above-2c1", GEN + ["faces", "--c1", "0.3", "--c2", "0.9", "--out", "{tmp}/out"], match="infeasible"),
    Case("c2-nan", GEN + ["faces", "--c2", "nan", "--out", "{tmp}/out"], match="c2"),
    Case("T-zero", GEN + ["faces", "--T", "0", "--out", "{tmp}/out"], match="T must"),
    Case("mode-unknown", GEN + ["faces", "--mode", "sideways", "--out", "{tmp}/out"], match="invalid choice"),
    Case("min-keypoints-negative", GEN + ["faces", "--min-keypoints", "-1", "--out", "{tmp}/out"],
         match="min_keypoints"),
    Case("pool-screen-zero", GEN + ["faces", "--pool-screen", "0", "--out", "{tmp}/out"], match="screen"),
    # --- challenge generate: data sources
    Case("unknown-data-source", GEN + ["faces", "--private-source", "mnist", "--out", "{tmp}/out"], out="out",
         precreate=False, match="unknown data source"),
    Case("cifar10-without-data-root", GEN + ["faces", "--private-source", "cifar10:test", "--out", "{tmp}/out"],
         match="data root"),
    Case("cifar10-bad-split", GEN + ["faces", "--private-source", "cifar10:valid", "--out", "{tmp}/out"],
         match="split"),
    Case("data-root-nowhere", GEN + ["faces", "--data-root", "{tmp}/no/such/root", "--out", "{tmp}/out"],
         out="out", precreate=False, match="data-root"),
    Case("cifar10-data-root-empty", GEN + ["faces", "--private-source", "cifar10:test", "--data-root", "{tmp}",
                                           "--out", "{tmp}/out"], match="CIFAR-10 not found"),
    Case("imagefolder-missing", GEN + ["faces", "--private-source", "imagefolder:{tmp}/nope", "--out", "{tmp}/out"],
         match="does not exist"),
    Case("imagefolder-without-images", GEN + ["faces", "--private-source", "imagefolder:{tmp}/imgs",
                                              "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (tmp / "imgs" / "a").mkdir(parents=True), match="no images"),
    Case("imagefolder-broken-image", GEN + ["faces", "--private-source", "imagefolder:{tmp}/imgs", "--n-priv", "2",
                                            "--out", "{tmp}/out"],
         lambda tmp, ch, dec: [_text(f"imgs/a/{i}.png", "not a png")(tmp, ch, dec) for i in range(3)],
         match="cannot read image"),
    Case("slice-not-numbers", GEN + ["faces", "--private-source", "lfw[a:b]", "--out", "{tmp}/out"], match="slice"),
    Case("slice-selects-nothing", GEN + ["faces", "--private-source", "lfw[500:]", "--out", "{tmp}/out"],
         match="no images|only 0"),
    Case("npz-missing", GEN + ["faces", "--private-source", "npz:{tmp}/nope.npz", "--out", "{tmp}/out"],
         match="does not exist"),
    Case("npz-is-one-npy", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (tmp / "src.npz").write_bytes(_npy_bytes(dec)), match="single .npy"),
    Case("npz-without-y", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.zeros((6, 32, 32, 3), np.uint8)), match="'y'"),
    Case("npz-x-wrong-ndim", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.zeros((6, 32), np.uint8), y=np.zeros(6, np.int64)), match="shape"),
    Case("npz-y-wrong-length", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.zeros((6, 32, 32, 3), np.uint8), y=np.zeros(4, np.int64)), match="'y'"),
    Case("npz-y-fractional", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.zeros((6, 32, 32, 3), np.uint8), y=np.full(6, 0.5)), match="integer"),
    Case("npz-x-out-of-range", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.full((6, 32, 32, 3), 200.0), y=np.zeros(6, np.int64)), match="lie in"),
    Case("npz-x-strings", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.full((6, 32, 32), "a"), y=np.zeros(6, np.int64)), match="dtype"),
    Case("npz-empty", GEN + ["faces", "--private-source", "npz:{tmp}/src.npz", "--out", "{tmp}/out"],
         _npz(x=np.zeros((0, 32, 32, 3), np.uint8), y=np.zeros(0, np.int64)), match="no images"),
    Case("pool-unknown", GEN + ["faces", "--n-priv", "4", "--T", "2", "--pool-source", "nowhere", "--out", "{tmp}/out"],
         out="out", precreate=False, match="unknown public pool"),
    Case("pool-tinyimagenet-without-root", GEN + ["faces", "--n-priv", "4", "--T", "2", "--pool-source",
                                                  "tinyimagenet", "--out", "{tmp}/out"], match="data root"),
    Case("generate-over-existing-challenge", GEN + ["faces", "--out", "{tmp}/out"], _existing_challenge, out="out",
         match="overwrite"),
    # --- challenge verify / show
    Case("verify-missing-folder", ["challenge", "verify", "{tmp}/nope"]),
    Case("verify-folder-without-manifest", ["challenge", "verify", "{tmp}"], match="manifest"),
    Case("show-missing-challenge", ["challenge", "show", "{tmp}/nope"], match="does not exist"),

    # --- attack identity: bad challenges
    Case("identity-challenge-missing", ID + ["{tmp}/nope", "--out", "{tmp}/out"], out="out", match="does not exist"),
    Case("identity-challenge-missing-new-out", ID + ["{tmp}/nope", "--out", "{tmp}/out"], out="out", precreate=False,
         match="does not exist"),
    Case("identity-nan-encryption", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _enc(_nan_enc), out="out", match="NaN"),
    Case("identity-encryption-wrong-shape", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _enc(lambda e: e[:, :16, :16]),
         out="out", match="32 x 32"),
    Case("identity-encryption-out-of-range", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _enc(lambda e: e * 3),
         out="out", match=r"\[-1"),
    Case("identity-labels-mismatch", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: np.save(d / "label.npy", np.load(d / "label.npy")[:-1])), out="out", match="labels"),
    Case("identity-manifest-not-json", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _copy_ch(_corrupt_manifest),
         out="out", match="JSON"),
    Case("identity-manifest-k-string", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _copy_ch(_manifest_k("six")),
         out="out", match="k"),
    Case("identity-out-under-a-file", ID + ["{ch}", "--out", "{tmp}/out/sub"], _existing_file, out="out",
         match="file"),

    # --- attack carlini: refused before any work
    Case("carlini-unknown-oracle", CARL + ["--oracle", "everything"], out="out", match="unknown oracle"),
    Case("carlini-set-without-equals", CARL + ["--set", "regression.steps"], out="out", match="--set"),
    Case("carlini-set-unknown-key", CARL + ["--set", "regression.nosuchkey=1"], out="out", match="nosuchkey"),
    Case("carlini-set-unknown-section", CARL + ["--set", "nosection.a=1"], out="out", match="nosection"),
    Case("carlini-set-section-to-number", CARL + ["--set", "regression=5"], out="out", match="regression"),
    Case("carlini-unknown-stage", CARL + ["--stages", "everything"], out="out", match="unknown stage"),
    Case("carlini-config-missing", CARL + ["--config", "{tmp}/nope.json"], out="out", match="does not exist"),
    Case("carlini-config-invalid-json", CARL + ["--config", "{tmp}/c.json"], _text("c.json", "{oops"), out="out",
         match="JSON"),
    Case("carlini-config-not-a-table", CARL + ["--config", "{tmp}/c.json"], _text("c.json", "[1, 2]"), out="out",
         match="table"),
    Case("carlini-seed-negative", CARL + ["--seed", "-1"], out="out", match="seed"),
    Case("carlini-oracle-without-key", ["attack", "carlini", "--challenge", "{tmp}/ch", "--out", "{tmp}/out",
                                        "--oracle", "assignment"], _copy_ch(lambda d: shutil.rmtree(d / "key")),
         out="out", match="key"),
    Case("carlini-unknown-aux", CARL + ["--aux", "mnist"], out="out", match="unknown data source"),
    Case("carlini-challenge-missing", ["attack", "carlini", "--challenge", "{tmp}/nope", "--out", "{tmp}/out"],
         out="out", match="does not exist"),
    Case("carlini-out-is-a-file", CARL, _existing_file, out="out", match="existing file"),
    Case("unknown-attack", ["attack", "nosuchattack", "--challenge", "{ch}"], match="invalid choice"),

    # --- attack gradient: refused before any work
    Case("gradient-unknown-data", GRAD + ["--data", "mnist"], out="out", match="unknown data source"),
    Case("gradient-k-1", GRAD + ["--defense", "instahide", "--k", "1"], out="out", match="k"),
    Case("gradient-batch-size-0", GRAD + ["--batch-size", "0"], out="out", match="batch_size"),
    Case("gradient-batch-above-data", GRAD + ["--batch-size", "500"], out="out", match="larger"),
    Case("gradient-iterations-0", GRAD + ["--set", "iterations=0"], out="out", match="iterations"),
    Case("gradient-set-string-for-number", GRAD + ["--set", "tv=abc"], out="out", match="'abc'"),
    Case("gradient-set-unknown-option", GRAD + ["--set", "nosuch=1"], out="out", match="nosuch"),
    Case("gradient-set-without-equals", GRAD + ["--set", "tv"], out="out", match="KEY=VALUE"),
    Case("gradient-unknown-device", GRAD + ["--device", "tpu"], out="out", match="device"),
    Case("gradient-local-steps-0", GRAD + ["--update", "fedavg", "--local-steps", "0"], out="out",
         match="local_steps"),
    Case("gradient-out-is-a-file", GRAD, _existing_file, out="out", match="existing file"),

    # --- report
    Case("report-empty-folder", ["report", "{tmp}/runs", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (tmp / "runs").mkdir(), out="out", match="no record.json"),
    Case("report-missing-path", ["report", "{tmp}/nope", "--out", "{tmp}/out"], out="out", precreate=False,
         match="does not exist"),
    Case("report-invalid-json", ["report", "{tmp}/runs", "--out", "{tmp}/out"], _record("{ truncated"), out="out",
         match="record.json.*JSON"),
    Case("report-json-list", ["report", "{tmp}/runs", "--out", "{tmp}/out"], _record([1, 2]), out="out",
         match="not a run record"),
    Case("report-attack-not-a-name", ["report", "{tmp}/runs", "--out", "{tmp}/out"], _record({"attack": 5}),
         out="out", match="attack"),
    Case("report-text-file", ["report", "{tmp}/notes.txt", "--out", "{tmp}/out"], _text("notes.txt"), out="out",
         match="notes.txt"),
    Case("report-one-bad-among-good", ["report", "{tmp}/runs", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (_record(GOOD_RECORD)(tmp, ch, dec),
                               (tmp / "runs" / "b").mkdir(), (tmp / "runs" / "b" / "record.json").write_text("{}")),
         out="out", match="runs/b/record.json"),

    # --- learned decoders, the model cache, bare releases and imported keys
    Case("decoder-no-aux", ID[:1] + ["deep_decompose", "--challenge", "{ch}", "--out", "{tmp}/out", "--aux", "none"],
         out="out", match="needs auxiliary images"),
    Case("decoder-bad-config-key", ID[:1] + ["gan_demask", "--challenge", "{ch}", "--out", "{tmp}/out", "--set",
                                             "decompose.net.widht=3"], out="out", match="decompose.net.widht"),
    Case("decoder-fuse-pairs-without-oracle", ID[:1] + ["deep_decompose", "--challenge", "{ch}", "--out", "{tmp}/out",
                                                        "--set", "fuse=\"pairs\"", "--set", "training.steps=1"],
         out="out", match="pairs"),
    Case("carlini-prior-unknown-decoder", CARL + ["--set", "prior.decoder=\"magic\""], out="out", match="prior.decoder"),
    Case("models-rm-nothing", ["models", "rm", "--model-dir", "{tmp}/models"], match="--all"),
    Case("models-rm-unknown", ["models", "rm", "nope", "--model-dir", "{tmp}/models"],
         lambda tmp, ch, dec: (tmp / "models").mkdir(), match="nope"),
    Case("attack-T-contradicts-manifest", ID + ["{ch}", "--out", "{tmp}/out", "--T", "4"], out="out",
         match="manifest states T=2"),
    Case("attack-T-does-not-divide", ID + ["{ch}", "--out", "{tmp}/out", "--T", "3"], out="out", match="dividing"),
    Case("key-import-missing-file", ["key", "import", "{ch}", "--private", "{tmp}/p.npy", "--selection",
                                     "{tmp}/s.npy"], match="does not exist"),
    Case("key-import-exists", ["key", "import", "{ch}", "--private", "{tmp}/p.npy", "--selection", "{tmp}/s.npy"],
         lambda tmp, ch, dec: (np.save(tmp / "p.npy", np.zeros((4, 32, 32, 3), np.float32)),
                               np.save(tmp / "s.npy", np.array([[i % 4, (i + 1) % 4] for i in range(8)]))),
         match="already exists"),
    Case("key-import-float-selection", ["key", "import", "{tmp}/bare", "--private", "{tmp}/p.npy", "--selection",
                                        "{tmp}/s.npy"],
         lambda tmp, ch, dec: ((tmp / "bare").mkdir(), shutil.copy(ch / "encryption.npy", tmp / "bare"),
                               shutil.copy(ch / "label.npy", tmp / "bare"),
                               np.save(tmp / "p.npy", np.zeros((4, 32, 32, 3), np.float32)),
                               np.save(tmp / "s.npy", np.full((8, 2), 0.5))),
         out="bare", precreate=False, match="integer"),

    # --- hostile files and numbers (trust issue): subprocesses, as a user meets them
    Case("npy-header-corrupt", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: (d / "encryption.npy").write_bytes(b"\x93NUMPY\x01\x00\x20\x00{'descr': <f4', 'shape: ((\n")),
         sub=True, out="out", match="corrupt .npy header"),
    Case("npy-header-petabyte", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: (d / "encryption.npy").write_bytes(_npy_claiming((2 ** 48, 32, 32, 3)))), sub=True,
         out="out", match="declares shape"),
    Case("manifest-scheme-not-a-table", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(_manifest_field("scheme", "abc")), sub=True, out="out", match="scheme"),
    Case("manifest-files-a-list", ["score", "--challenge", "{tmp}/ch", "--decryption", "{tmp}/d.npy"],
         lambda tmp, ch, dec: (_copy_ch(_manifest_field("files", []))(tmp, ch, dec), _save(tmp / "d.npy", dec)),
         sub=True, match="files"),
    Case("manifest-class-names-numbers", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(_scheme_field("class_names", [1, 2])), sub=True, out="out", match="class_names"),
    Case("set-steps-1e23", CARL + ["--set", "regression.steps=1e23"], sub=True, out="out", match="integer"),
    Case("decoder-batch-size-huge", ID[:1] + ["deep_decompose", "--challenge", "{ch}", "--out", "{tmp}/out", "--set",
                                              "training.batch_size=100000000"], sub=True, out="out",
         match="would need about"),
    Case("threads-huge", ID + ["{ch}", "--out", "{tmp}/out", "--threads", "100000"], sub=True, out="out",
         match="threads"),
    Case("recipe-T-huge", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK.replace("T = 2", "T = 1000000000")), sub=True, out="out", precreate=False,
         match="would need about"),
    Case("recipe-pool-screen-huge", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe(RECIPE_OK + "screen = 1000000000000000\nregion = 16\n"), sub=True, out="out", precreate=False,
         match="would need about"),
    Case("recipe-not-utf8", GEN + ["{tmp}/r.toml", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: (tmp / "r.toml").write_bytes(b'name = "r\xff\xfe"\n'), sub=True, out="out",
         precreate=False, match="UTF-8"),
    Case("cifar-batch-corrupt", GEN + ["faces", "--private-source", "cifar10:test", "--data-root", "{tmp}/root",
                                       "--out", "{tmp}/out"], _cifar_batches(b"\x80\x02garbage"), sub=True, out="out",
         precreate=False, match="CIFAR-10 batch"),
    Case("cifar-batch-not-data", GEN + ["faces", "--private-source", "cifar10:test", "--data-root", "{tmp}/root",
                                        "--out", "{tmp}/out"], _cifar_batches(None), sub=True, out="out",
         precreate=False, match="not a CIFAR-10 batch"),
    Case("report-record-wrong-types", ["report", "{tmp}/runs", "--out", "{tmp}/out"],
         _record({**GOOD_RECORD, "metrics": "abc"}), sub=True, out="out", match="metrics"),
    Case("report-record-seed-string", ["report", "{tmp}/runs", "--out", "{tmp}/out"],
         _record({**GOOD_RECORD, "seed": "0"}), out="out", match="seed"),
    Case("release-zero-encryptions", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: (np.save(d / "encryption.npy", np.zeros((0, 32, 32, 3), np.float32)),
                             np.save(d / "label.npy", np.zeros((0, 2), np.float32)))), sub=True, out="out",
         match="no encryptions"),
    Case("manifest-T-does-not-divide", ID + ["{tmp}/ch", "--out", "{tmp}/out"], _copy_ch(_scheme_field("T", 3)),
         sub=True, out="out", match="does not divide"),
    Case("manifest-n-encryptions-wrong", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(_scheme_field("n_encryptions", 48)), out="out", match="48"),
    Case("labels-all-negative", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: np.save(d / "label.npy", -np.ones_like(np.load(d / "label.npy")))), sub=True, out="out",
         match="coefficients"),
    Case("labels-more-columns-than-classes", ID + ["{tmp}/ch", "--out", "{tmp}/out"],
         _copy_ch(lambda d: np.save(d / "label.npy", np.pad(np.load(d / "label.npy"), ((0, 0), (0, 3))))),
         sub=True, out="out", match="columns"),
    Case("device-cuda-7", ID + ["{ch}", "--out", "{tmp}/out", "--device", "cuda:7"], sub=True, out="out",
         match="cuda:7"),
    Case("device-cuda-word", ID + ["{ch}", "--out", "{tmp}/out", "--device", "cuda:x"], out="out", match="device"),
    Case("cache-unwritable", ID + ["{ch}", "--out", "{tmp}/out", "--cache", "/proc/hidebench-cache"], sub=True,
         out="out", match="--cache"),
    Case("model-dir-unwritable", ID[:1] + ["deep_decompose", "--challenge", "{ch}", "--out", "{tmp}/out",
                                           "--model-dir", "/proc/hidebench-models"], sub=True, out="out",
         match="--model-dir"),
    Case("score-swapped-key", ["score", "--challenge", "{tmp}/ch", "--decryption", "{tmp}/d.npy"],
         lambda tmp, ch, dec: (_copy_ch(_swap_key)(tmp, ch, dec), _save(tmp / "d.npy", np.zeros_like(dec))),
         sub=True, out="ch", precreate=False, match="does not match"),
    Case("score-key-without-manifest", ["score", "--challenge", "{tmp}/ch", "--decryption", "{tmp}/d.npy"],
         lambda tmp, ch, dec: (_copy_ch(lambda d: (d / "key" / "manifest.json").unlink())(tmp, ch, dec),
                               _save(tmp / "d.npy", dec)), sub=True, match="manifest.json is missing"),
    Case("show-out-beside-public-files", ["challenge", "show", "{tmp}/ch", "--out", "{tmp}/ch/show.png"], _copy_ch(),
         sub=True, out="ch", precreate=False, match="public part"),
    Case("generate-overwrite-user-files", GEN + ["faces", "--n-priv", "4", "--T", "2", "--out", "{tmp}/out",
                                                 "--overwrite"], sub=True, out="out", match="keep-me.txt"),
    Case("report-sweep-json-damaged", ["report", "{tmp}/S", "--out", "{tmp}/out"],
         lambda tmp, ch, dec: ((tmp / "S").mkdir(), (tmp / "S" / "sweep.json").write_text(
             json.dumps({"format": "hidebench-sweep/1", "sweep": {"name": "x"}, "runs": [{"run_id": 5}]}))),
         sub=True, out="out", precreate=False, match="damaged"),
    Case("sweep-device-cuda-7", ["sweep", "faces-quick", "--out", "{tmp}/out", "--device", "cuda:7"], sub=True,
         out="out", precreate=False, match="cuda:7"),
    Case("sweep-workers-huge", ["sweep", "faces-quick", "--out", "{tmp}/out", "--workers", "100000"], sub=True,
         out="out", precreate=False, match="--workers"),

    # --- top level
    Case("no-command", [], match="required"),
    Case("unknown-command", ["frobnicate"], match="invalid choice"),
]


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _check(case: Case, rc: int, out: str, err: str, before, after) -> None:
    assert "Traceback" not in out + err, f"traceback:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("hidebench: error:")]
    assert len(errors) == 1, f"expected one 'hidebench: error:' line, got stderr:\n{err}"
    assert rc == 2, f"exit status {rc}, stderr:\n{err}"
    if case.match:
        import re

        assert re.search(case.match, errors[0]), f"{errors[0]!r} does not match {case.match!r}"
    assert after == before, f"output folder changed: before {before}, after {after}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clean_error(case, challenge, decryption, tmp_path, monkeypatch, capsys):
    if case.setup:
        case.setup(tmp_path, challenge, decryption)
    if case.out and case.precreate and not (tmp_path / case.out).exists():
        (tmp_path / case.out).mkdir(parents=True)
        (tmp_path / case.out / SENTINEL).write_text("must survive\n")
    args = [a.format(ch=challenge, tmp=tmp_path) for a in case.args]
    out_dir = tmp_path / case.out if case.out else None
    before = snapshot(out_dir) if out_dir else None
    # main() exports --data-root as HIDEBENCH_DATA: setenv first, so that monkeypatch restores
    # the variable's original state (unset included) after the case
    original = os.environ.get("HIDEBENCH_DATA")
    monkeypatch.setenv("HIDEBENCH_DATA", original or "")
    if not case.data_env or original is None:
        monkeypatch.delenv("HIDEBENCH_DATA")
    if case.sub:
        env = dict(os.environ)
        if not case.data_env:
            env.pop("HIDEBENCH_DATA", None)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        p = subprocess.run([sys.executable, "-m", "hidebench", *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120, check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    else:
        monkeypatch.chdir(tmp_path)
        try:
            rc = main(args)
        except SystemExit as e:           # argparse refuses before main's own handler
            rc = e.code
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    _check(case, rc, out, err, before, snapshot(out_dir) if out_dir else None)


def test_table_is_large_and_has_real_subprocess_cases():
    assert len(CASES) >= 60
    assert sum(c.sub for c in CASES) >= 12
    assert len({c.id for c in CASES}) == len(CASES)


def test_corrupt_stage_cache_is_recomputed_or_refused(tmp_path):
    """A cache whose arrays file is corrupt (owned by hidebench.stage_cache): recomputed, or a
    clear HidebenchError; never a raw zipfile/pickle error."""
    from hidebench.stage_cache import StageCache, config_hash
    from hidebench.types import HidebenchError

    d = tmp_path / "cache" / "s"
    d.mkdir(parents=True)
    (d / "arrays.npz").write_text("not a zip")
    (d / "manifest.json").write_text(json.dumps({"stage": "s", "config": {}, "config_hash": config_hash({})}))
    try:
        arrays = StageCache(tmp_path / "cache").get_or_compute("s", {}, lambda: {"a": np.arange(3)})
    except HidebenchError:
        return
    assert np.array_equal(arrays["a"], np.arange(3))


# ----------------------------------------------------------------------------- related fixes

def test_progress_bars_are_off_unless_asked_and_on_a_terminal(monkeypatch):
    from hidebench.progress import bar

    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Tty(False))
    assert bar(range(3), enabled=True).disable
    monkeypatch.setattr(sys, "stderr", Tty(True))
    assert bar(range(3), enabled=False).disable
    b = bar(range(3), enabled=True, file=sys.stderr)
    assert not b.disable and list(b) == [0, 1, 2]


def test_quiet_loading_draws_no_bar(tmp_path, capfd):
    """load_source passes the caller's progress flag down to the image-file loader."""
    from PIL import Image

    from hidebench.data import load_source

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    s = load_source(f"imagefolder:{tmp_path}[::2]", progress=False)
    assert len(s) == 3 and capfd.readouterr().err == ""


def _write_record(path: Path, attack, oracles, n_priv, seconds, max_ssim, family="release"):
    from hidebench.record import RunRecord

    path.mkdir(parents=True)
    setting = {"k": 6, "mode": "cross", "T": 10, "n_priv": n_priv, "n_encryptions": 10 * n_priv} \
        if family == "release" else {"k": 4, "mode": "inside", "batch_size": 1}
    metrics = {"challenge": {"Max_SSIM": max_ssim}} if family == "release" else {"vs_private": {"ssim": max_ssim}}
    RunRecord(attack=attack, family=family, config={}, threat_model={}, oracles=oracles, seed=0, setting=setting,
              metrics=metrics, timings={"total_s": seconds}).write(path / "record.json")


def test_report_fits_each_attack_separately_and_labels_each_bar(tmp_path):
    from hidebench.app.report import bar_labels, build_report, records_table, scaling_fits

    runs = tmp_path / "runs"
    for n, t in ((25, 100.0), (50, 400.0), (100, 1600.0)):            # carlini: time ~ n^2
        _write_record(runs / f"carlini-{n}", "carlini", [], n, t, 0.7)
    _write_record(runs / "carlini-oracle-25", "carlini", ["assignment"], 25, 50.0, 0.9)   # one size: no fit
    for n, t in ((25, 0.01), (100, 0.04)):                            # identity: time ~ n
        _write_record(runs / f"identity-{n}", "identity", [], n, t, -0.01)
    _write_record(runs / "ig", "inverting_gradients", [], None, 3.0, 0.2, family="update")
    _write_record(runs / "ig-again", "inverting_gradients", [], None, 3.0, 0.3, family="update")
    df = records_table([runs])
    fits = {(f["attack"], f["oracles"]): f["exponent"] for f in scaling_fits(df)}
    assert fits.keys() == {("carlini", "none"), ("identity", "none")}
    assert fits[("carlini", "none")] == pytest.approx(2.0) and fits[("identity", "none")] == pytest.approx(1.0)
    labels = bar_labels(df)
    assert [lab.split("\n")[:2] for lab in labels] == [[a, o] for a, o in zip(df["attack"], df["oracles"])]
    assert sum(lab.startswith("carlini\nassignment") for lab in labels) == 1
    assert sum(lab.startswith("identity\nnone") for lab in labels) == 2
    assert len(set(labels)) == len(labels)                  # alike runs are told apart by their folder
    assert {lab.split("\n")[-1] for lab in labels if lab.startswith("inverting_gradients")} == {"ig", "ig-again"}
    html = build_report([runs], tmp_path / "rep").read_text()
    assert "carlini / none: time ~ n_priv^2.00" in html and "identity / none: time ~ n_priv^1.00" in html
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["max_ssim.png", "report.html", "results.csv",
                                                                     "scaling.png"]
