"""The `carlini` attack end to end: harness, stage runner, cache/resume, CLI, bad input, faces case."""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import random_images
from test_carlini_recovery import smooth_images

from hidebench.app.harness import run_release_attack
from hidebench.attacks.base import get_attack
from hidebench.attacks.carlini import STAGE_NAMES
from hidebench.attacks.carlini.config import CarliniConfig
from hidebench.attacks.grouping.membership import check_release
from hidebench.challenge_io import save_challenge
from hidebench.context import ExecutionContext
from hidebench.defenses.instahide import EncryptionConfig, encrypt
from hidebench.pipeline import Stage, run_pipeline
from hidebench.stage_cache import StageCache
from hidebench.stock import load_preset
from hidebench.threat import Oracle, ReleaseThreatModel
from hidebench.types import HidebenchError, PublicView

FAST = {"regression": {"adam_steps": 10}, "similarity": {"method": "pearson"}}
CTX = ExecutionContext(device="cpu", progress=False)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A small k=6 cross-dataset InstaHide challenge on disk, with its key."""
    rng = np.random.default_rng(0)
    n = 16
    priv = smooth_images(rng, n)
    view, key = encrypt(priv, rng.integers(0, 4, n), 4, EncryptionConfig(k=6, mode="cross", T=20), seed=1,
                        public_patches=random_images(rng, 200))
    d = tmp_path_factory.mktemp("tiny")
    save_challenge(d, view, key, {"recipe": {"attacker": {"aux": None}}})
    return d


def _run(name, challenge, out, config=None, threat=None, ctx=CTX):
    return run_release_attack(name, challenge, out, config=config, threat=threat, ctx=ctx)


def test_oracle_assignment_run_and_resume(tiny_dir, tmp_path):
    threat = ReleaseThreatModel(oracles=("assignment",))
    rec = _run("carlini", tiny_dir, tmp_path, config=FAST, threat=threat)
    m = rec.metrics
    identity = _run("identity", tiny_dir, tmp_path / "id").metrics["challenge"]["Max_SSIM"]
    assert m["challenge"]["Max_SSIM"] > identity + 0.15   # measured 0.28 vs 0.06 (no aux: one flip left open)
    st = m["stages"]
    assert st["grouping"]["assignment_accuracy"] == 1.0
    assert st["lambda_mae"] < 0.05
    assert st["ssim_by_step"]["final"] >= st["ssim_by_step"]["magnitudes"]
    for stage in ("grouping", "regression", "signs", "decryption"):
        assert f"{stage}_s" in rec.timings and f"{stage}_peak_rss_mb" in rec.timings
    steps = [rec.timings[f"regression.{s}_s"] for s in ("magnitudes", "sign_sync", "altmin", "adam")]
    assert min(steps) > 0 and sum(steps) <= rec.timings["regression_s"]
    assert (tmp_path / "cache" / "regression" / "manifest.json").is_file()
    first = np.load(tmp_path / "decryption.npy")
    rec2 = _run("carlini", tiny_dir, tmp_path, config=FAST, threat=threat)
    assert rec2.stats["cache_hits"] == {"grouping": True, "regression": True, "signs": True}
    np.testing.assert_array_equal(np.load(tmp_path / "decryption.npy"), first)
    # recomputing a stage whose output comes out the same leaves the stages downstream cached
    rec3 = _run("carlini", tiny_dir, tmp_path, config=FAST, threat=threat, ctx=CTX.replace(recompute=("regression",)))
    assert rec3.stats["cache_hits"] == {"grouping": True, "regression": False, "signs": True}
    np.testing.assert_array_equal(np.load(tmp_path / "decryption.npy"), first)
    # a changed regression config recomputes regression and, as its output changed, signs
    cfg = json.loads(json.dumps(FAST))
    cfg["regression"]["steps"] = 5
    rec4 = _run("carlini", tiny_dir, tmp_path, config=cfg, threat=threat)
    assert rec4.stats["cache_hits"] == {"grouping": True, "regression": False, "signs": False}


@dataclass
class _Out:
    x: np.ndarray


def test_runner_recomputes_downstream_only_when_the_output_changed(tmp_path):
    """The stage runner: a stage named in recompute runs again; its consumers run again exactly
    when its output changed (their keys hold its digest); skipped stages are absent."""
    calls = []
    value = {"a": 1.0}

    def stage_a(inp):
        calls.append("a")
        return _Out(np.full(3, value["a"]))

    def stage_b(inp, a):
        calls.append("b")
        return _Out(a.x * 2)

    stages = [Stage("a", stage_a, _Out, lambda inp: {"k": 1}),
              Stage("skipped", stage_a, _Out, lambda inp: {}, when=lambda inp: False),
              Stage("b", stage_b, _Out, lambda inp: {"k": 2}, upstream=("a", "skipped"))]
    run = run_pipeline(stages, None, StageCache(tmp_path))
    assert calls == ["a", "b"] and "skipped" not in run.outputs and run.outputs["b"].x.tolist() == [2.0] * 3
    run = run_pipeline(stages, None, StageCache(tmp_path, recompute=("a",)))
    assert calls == ["a", "b", "a"] and run.hits == {"a": False, "b": True}
    value["a"] = 5.0
    run = run_pipeline(stages, None, StageCache(tmp_path, recompute=("a",)))
    assert calls == ["a", "b", "a", "a", "b"] and run.outputs["b"].x.tolist() == [10.0] * 3


def test_stage_names_are_the_declared_stages():
    """The names `--stages` accepts are those of both recoveries' stage lists, in pipeline order."""
    from hidebench.attacks.carlini.stages import FUSION_STAGES, STAGES

    declared = [s.name for s in STAGES] + [s.name for s in FUSION_STAGES]
    assert STAGE_NAMES == get_attack("carlini").stages
    assert set(STAGE_NAMES) == set(declared)
    for stages in (STAGES, FUSION_STAGES):
        names = [s.name for s in stages]
        assert names == sorted(names, key=STAGE_NAMES.index)


def test_bad_input_keeps_cache(tiny_dir, tmp_path):
    from hidebench.challenge_io import load_key, load_public

    _run("carlini", tiny_dir, tmp_path, config=FAST, threat=ReleaseThreatModel(oracles=("assignment",)))
    manifest = (tmp_path / "cache" / "regression" / "manifest.json").read_bytes()
    view = load_public(tiny_dir)
    key = load_key(tiny_dir, view)
    attack = get_attack("carlini")(FAST, ReleaseThreatModel(aux=None, oracles=("assignment",)))
    ctx = CTX.replace(cache_dir=tmp_path / "cache")
    # k mismatch: an inside-dataset k=4 release declared cross-dataset
    rng = np.random.default_rng(1)
    v4, _ = encrypt(random_images(rng, 8), np.arange(8), 8, EncryptionConfig(k=4, mode="inside", T=5), seed=2)
    bad = PublicView(v4.encryptions, v4.labels, 4, "cross", "instahide", T=5)
    with pytest.raises(HidebenchError, match="nonzero entries"):
        attack.run(bad, Oracle(key, ("assignment",)), ctx)
    # T that does not divide E: refused by the view itself
    with pytest.raises(HidebenchError, match="does not divide"):
        PublicView(view.encryptions, view.labels, 6, "cross", "instahide", T=7)
    # an unresolved aux ('recipe') is refused, not read as a data source
    with pytest.raises(HidebenchError, match="resolve"):
        get_attack("carlini")(FAST, ReleaseThreatModel()).run(view, Oracle(None, ()), ctx)
    # label shape mismatch and missing files
    with pytest.raises(HidebenchError, match="labels"):
        PublicView(view.encryptions, view.labels[:-1], 6, "cross", "instahide", T=20)
    with pytest.raises(HidebenchError):
        _run("carlini", tmp_path / "nowhere", tmp_path / "x", config=FAST)
    assert (tmp_path / "cache" / "regression" / "manifest.json").read_bytes() == manifest


def test_config_validation():
    with pytest.raises(HidebenchError, match="bogus"):
        CarliniConfig.from_dict({"regression": {"bogus": 1}})
    with pytest.raises(HidebenchError, match="nope"):
        get_attack("carlini")({"similarity": {"nope": 1}})
    with pytest.raises(HidebenchError, match="wrong"):
        get_attack("carlini")({"wrong": 1})
    with pytest.raises(HidebenchError):
        CarliniConfig.from_dict({"signs": {"method": "magic"}})
    with pytest.raises(HidebenchError, match="colour"):
        CarliniConfig(colour="sepia")
    with pytest.raises(HidebenchError, match="seed"):              # the seed is the context's
        get_attack("carlini")({"regression": {"seed": 3}})
    c = get_attack("carlini")({"regression": {"steps": 3}, "signs": {"neighbours": 4}}).config
    assert c.regression.steps == 3 and c.signs.neighbours == 4
    assert get_attack("carlini")(load_preset("carlini", "demo")).config.similarity.embedder.steps == 300
    assert CarliniConfig.from_dict(CarliniConfig().to_dict()) == CarliniConfig()


def test_attack_module_imports_no_torch():
    code = ("import sys, attacks, hidebench.attacks.carlini.attack\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_resume_and_errors(tiny_dir, tmp_path, capsys):
    from hidebench.app.cli import main

    args = ["attack", "carlini", "--challenge", str(tiny_dir), "--out", str(tmp_path), "--oracle", "assignment",
            "--quiet", "--device", "cpu", "--set", "regression.adam_steps=5"]
    assert main(args) == 0
    assert (tmp_path / "record.json").is_file() and (tmp_path / "decryption.npy").is_file()
    assert main(args) == 0
    assert "resumed from cache: grouping, regression, signs" in capsys.readouterr().out
    assert main(args + ["--stages", "regression"]) == 0
    assert "resumed from cache: grouping, signs" in capsys.readouterr().out
    assert main(args + ["--set", "regression.nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["attack", "carlini", "--challenge", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe

    d = tmp_path_factory.mktemp("faces")
    generate_to_dir(load_recipe("faces", {"n_priv": 20}), d, progress=False)
    return d


def test_pipeline_beats_identity_on_faces(faces_dir, tmp_path):
    """No oracle: grouping (Pearson similarity, no training) -> regression -> signs on a small
    faces case must beat the identity baseline on the challenge metric."""
    threat = ReleaseThreatModel(aux="lfw[1::2]", public_pool=False)
    rec = _run("carlini", faces_dir, tmp_path, config=FAST, threat=threat)
    base = _run("identity", faces_dir, tmp_path / "id").metrics["challenge"]["Max_SSIM"]
    assert rec.metrics["challenge"]["Max_SSIM"] > base + 0.1
    assert "pair_auc" in rec.metrics["stages"]["grouping"]
    assert rec.stats["colour"] == "grey"            # LFW aux is grey: channels solved as one
    assert Path(tmp_path / "recovered.npy").is_file()


def test_aux_mean_prior_lifts_faces(faces_dir, tmp_path):
    """prior.decoder 'aux_mean' (what 'auto' picks when aux data is granted): every group's
    prior image is its class's aux mean (no training). On faces, whose images share a layout, it
    fixes signs the noisy grouping's per-position votes leave open; it needs aux data and takes
    no decoder_config."""
    threat = ReleaseThreatModel(aux="lfw[1::2]", public_pool=False)
    base = {**FAST, "reassignment": {"rounds": 0}}
    off = _run("carlini", faces_dir, tmp_path / "off", config={**base, "prior": {"decoder": "none"}}, threat=threat)
    on = _run("carlini", faces_dir, tmp_path / "on", config=base, threat=threat)
    assert "decoder_prior" not in off.stats
    assert {k: on.stats["decoder_prior"][k] for k in ("decoder", "aux_classes")} == {"decoder": "aux_mean",
                                                                                   "aux_classes": "the release's"}
    assert on.metrics["private_set"]["ssim"] > off.metrics["private_set"]["ssim"] + 0.05
    no_aux = ReleaseThreatModel(aux=None, public_pool=False)
    assert "decoder_prior" not in _run("carlini", faces_dir, tmp_path / "auto", config=base, threat=no_aux).stats
    with pytest.raises(HidebenchError, match="prior.decoder 'aux_mean'.*grants none"):
        _run("carlini", faces_dir, tmp_path / "x", config={**base, "prior": {"decoder": "aux_mean"}}, threat=no_aux)
    with pytest.raises(HidebenchError, match="decoder_config configures the deep_decompose"):
        CarliniConfig.from_dict({"prior": {"decoder": "aux_mean", "decoder_config": {"training": {"steps": 1}}}})


def test_check_release_needs_T(tiny_dir):
    from hidebench.challenge_io import load_public

    v = load_public(tiny_dir)
    assert check_release(v) == 16
    with pytest.raises(HidebenchError, match=r"does not state T.*: 20 \(n_priv 16\).*give --T or --n-priv"):
        check_release(PublicView(v.encryptions, v.labels, 6, "cross", "instahide", T=None))


@pytest.mark.parametrize("T", [5, 12])
def test_plausible_T_keeps_the_truth_and_drops_what_the_class_counts_forbid(T):
    """The labels of a 10-class release keep its true T and drop every T that would leave a
    class with fewer slots than one image's T, or counts far from whole multiples of 2T."""
    from hidebench.attacks.grouping.membership import class_slot_counts, plausible_T

    rng = np.random.default_rng(T)
    n = 60
    classes = rng.integers(0, 10, n)
    view, _ = encrypt(random_images(rng, n), classes, 10, EncryptionConfig(k=4, mode="cross", T=T), seed=T,
                      public_patches=random_images(rng, 50))
    counts = class_slot_counts(view.labels, 2)
    assert counts.sum() == 2 * n * T                                   # every slot counted once
    kept = dict(plausible_T(view.labels, 2))
    assert T in kept
    assert all(len(view) % t == 0 and len(view) // t >= 2 for t in kept)
    assert max(kept) <= counts[counts > 0].min()                       # a class holds at least one image's T slots
    assert len(kept) < sum(len(view) % t == 0 for t in range(1, len(view) // 2 + 1))


def test_preset_name_is_not_shadowed_by_a_folder(tmp_path, monkeypatch):
    """`--config demo` loads the preset even where a folder named `demo` sits in the working
    directory (a `hidebench demo --out demo` leaves one); a file of that name is read instead."""
    from hidebench.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_config("demo", attack="carlini") == load_preset("carlini", "demo")
    (tmp_path / "tiny").write_text("{}")
    assert load_config("tiny", attack="carlini") == {}


def test_aux_classes_are_the_releases_only_by_name():
    """The aux-mean prior uses class means only where the aux classes are the release's (same
    names, same order, or names unknown); a proxy aux gets the overall mean."""
    from hidebench.attacks.carlini.stages import aux_classes_match

    e, lab = np.zeros((2, 4, 4, 3), np.float32), np.full((2, 2), 0.5, np.float32)
    named = PublicView(e, lab, 4, "cross", "instahide", T=1, class_names=["face", "non-face"])
    assert aux_classes_match(named, ["face", "non-face"])
    assert not aux_classes_match(named, ["non-face", "face"]) and not aux_classes_match(named, ["c0", "c1"])
    assert aux_classes_match(PublicView(e, lab, 4, "cross", "instahide", T=1), ["airplane", "automobile"])
