"""Releases hidebench did not generate: a bare 2020-format folder (encryption.npy + label.npy,
the scheme stated in prose) is attacked with --k/--mode/--scheme/--T/--n-priv, and a ground
truth given as arrays becomes a minimal key/ that `score` accepts."""
import shutil

import numpy as np
import pytest

from hidebench.app.cli import main
from hidebench.challenge_io import import_key, load_key, load_public
from hidebench.defenses.challenge import generate_to_dir
from hidebench.recipes import load_recipe
from hidebench.types import HidebenchError


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen") / "ch"
    generate_to_dir(load_recipe("faces", {"n_priv": 8, "T": 5, "k": 4, "mode": "inside"}), d, progress=False)
    return d


@pytest.fixture
def bare(generated, tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    for f in ("encryption.npy", "label.npy"):
        shutil.copy(generated / f, d / f)
    return d


def test_bare_folder_takes_the_scheme_from_flags(bare, generated, tmp_path, capsys):
    with pytest.raises(HidebenchError, match="does not state T"):
        from hidebench.app.harness import run_release_attack

        run_release_attack("carlini", bare, tmp_path / "x", release={"k": 4, "mode": "inside"})
    v = load_public(bare, k=4, mode="inside", n_priv=8)
    assert v.T == 5 and v.n_private == 8 and v.k == 4
    assert main(["attack", "carlini", "--challenge", str(bare), "--out", str(tmp_path / "c"), "--k", "4", "--mode",
                 "inside", "--n-priv", "8", "--set", "similarity.method=\"pearson\"", "--quiet", "--device", "cpu"]) == 0
    assert (tmp_path / "c" / "decryption.npy").exists()


def test_augmentation_reaches_the_attackers_own_encryptions(bare, generated, tmp_path):
    """An augmented release (manifest, or --augmented for a bare folder) makes the attacker's
    training encryptions augmented too, with the release's coefficient bounds; the similarity
    model's cache key tells them apart, and a plain release keeps its old key."""
    from hidebench.attacks.attacker_data import AttackerEncryptions
    from hidebench.attacks.carlini.config import CarliniConfig
    from hidebench.attacks.carlini.stages import AttackInputs
    from hidebench.attacks.grouping.stages import _similarity_model_key
    from hidebench.context import ExecutionContext
    from hidebench.data import load_source

    aug = tmp_path / "aug"
    generate_to_dir(load_recipe("faces", {"n_priv": 8, "T": 5, "k": 4, "mode": "inside", "augment": True}), aug,
                    progress=False)
    aux = load_source("lfw[1::2]")
    plain, bare_aug, from_manifest = load_public(generated), load_public(bare, augment=True), load_public(aug)
    assert not plain.augment and bare_aug.augment and from_manifest.augment
    for view, augmented in ((plain, False), (from_manifest, True)):
        att = AttackerEncryptions(view, aux, n_images=6, T=2, seed=0)
        assert att.cfg.augment is augmented and (att.cfg.c1, att.cfg.c2) == (view.c1, view.c2)
        enc, ids = att.draw()
        assert enc.shape == (12, 32, 32, 3) and ids.shape == (12, 4)
    keys = [_similarity_model_key(AttackInputs(v, CarliniConfig(), ExecutionContext(progress=False), 8))["scheme"]
            for v in (plain, from_manifest)]
    assert keys == [[4, "inside", "instahide", 2], [4, "inside", "instahide", 2, 0.65, 0.3, True]]


@pytest.mark.parametrize("flags, match", [
    (["--T", "3"], "dividing"),
    (["--n-priv", "7"], "whole T"),
    (["--T", "4", "--n-priv", "8"], "give 32"),
    (["--T", "8"], "manifest states T=5"),
    (["--k", "6"], "manifest states k=4"),
    (["--augmented"], "manifest states augment=False"),
])
def test_contradictions_are_one_error_before_any_work(generated, tmp_path, capsys, flags, match):
    assert main(["attack", "identity", "--challenge", str(generated), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hidebench: error:") and match in err and not (tmp_path / "o").exists()


def test_minimal_key_import_and_score(bare, generated, tmp_path, capsys):
    full = load_key(generated)
    np.save(tmp_path / "p.npy", full.private)
    np.save(tmp_path / "s.npy", full.private_of())              # E x 4: private slots only
    np.save(tmp_path / "d.npy", np.load(generated / "encryption.npy"))
    assert main(["score", "--challenge", str(bare), "--decryption", str(tmp_path / "d.npy")]) == 2
    assert "key import" in capsys.readouterr().err
    assert main(["key", "import", str(bare), "--private", str(tmp_path / "p.npy"), "--selection",
                 str(tmp_path / "s.npy"), "--k", "4", "--mode", "inside"]) == 0
    key = load_key(bare, load_public(bare, k=4, mode="inside"))
    assert key.sign is None and key.lambdas is None and key.private_labels is None
    capsys.readouterr()
    assert main(["score", "--challenge", str(bare), "--decryption", str(tmp_path / "d.npy"), "--k", "4", "--mode",
                 "inside"]) == 0
    minimal = capsys.readouterr().out
    assert main(["score", "--challenge", str(generated), "--decryption", str(tmp_path / "d.npy")]) == 0
    assert capsys.readouterr().out == minimal                    # the metric needs no more than the minimal key
    with pytest.raises(HidebenchError, match="already exists"):
        import_key(bare, {"private": full.private, "selection": full.private_of()}, release={"k": 4, "mode": "inside"})


@pytest.mark.parametrize("arrays, match", [
    ({"selection": "ok"}, "needs 'private' and 'selection'"),
    ({"private": "ok", "selection": "short"}, "does not match"),
    ({"private": "ok", "selection": "out_of_range"}, "outside"),
    ({"private": "ok", "selection": "repeat"}, "repeats"),
    ({"private": "nan", "selection": "ok"}, "NaN"),
    ({"private": "ok", "selection": "ok", "sign": "short"}, "sign mask"),
])
def test_bad_ground_truth_is_refused(bare, generated, arrays, match):
    full = load_key(generated)
    ids = full.private_of()
    values = {"ok": None, "short": ids[:-1], "out_of_range": ids + 100, "repeat": np.repeat(ids[:, :1], 4, 1),
              "nan": np.full_like(full.private, np.nan)}
    a = {}
    for name, kind in arrays.items():
        a[name] = (full.private if name == "private" else ids) if kind == "ok" else values[kind]
        if name == "sign" and kind == "short":
            a[name] = full.sign[:-1]
    with pytest.raises(HidebenchError, match=match):
        import_key(bare, a, release={"k": 4, "mode": "inside"})
    assert not (bare / "key").exists()
