import json
import shutil

import numpy as np
import pytest

from hidebench.app.cli import main
from hidebench.challenge_io import KEY_FILES, load_key, load_public, recorded_hashes
from hidebench.defenses.challenge import generate, generate_to_dir, verify
from hidebench.recipes import challenge_data, load_recipe, recipe_from_dict
from hidebench.types import HidebenchError


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("faces")
    assert main(["challenge", "generate", "faces", "--out", str(out), "--quiet"]) == 0
    return out


def test_generated_files_follow_the_2020_format(faces_dir):
    recipe = load_recipe("faces")
    E = recipe.private.n_priv * recipe.scheme.T
    enc = np.load(faces_dir / "encryption.npy")
    lab = np.load(faces_dir / "label.npy")
    assert enc.shape == (E, 32, 32, 3) and enc.dtype == np.float32 and np.abs(enc).max() <= 1
    assert lab.shape == (E, 2) and lab.dtype == np.float32
    key = load_key(faces_dir)
    assert key.selection.shape == (E, 6) and key.lambdas.shape == (E, 6) and key.sign.dtype == np.int8
    assert key.private.shape == (recipe.private.n_priv, 32, 32, 3)
    # the labels' nonzero entries are the private lambdas
    assert np.allclose(lab.sum(1), key.lambdas[:, :2].sum(1), atol=1e-6)


def test_public_manifest_lists_only_public_files(faces_dir):
    assert sorted(p.name for p in faces_dir.iterdir()) == ["encryption.npy", "key", "label.npy", "manifest.json"]
    manifest = json.loads((faces_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["encryption.npy", "label.npy"]
    assert "seed" not in manifest["recipe"]
    key_manifest = json.loads((faces_dir / "key" / "manifest.json").read_text())
    assert sorted(key_manifest["files"]) == sorted(["manifest.json"] + [f"key/{n}" for n in KEY_FILES])
    view = load_public(faces_dir)
    assert view.k == 6 and view.mode == "cross" and view.T == 20


def test_matches_committed_checksums(faces_dir):
    committed = json.loads((challenge_data() / "checksums.json").read_text())["faces"]
    assert (faces_dir / "key" / "seed").read_text().strip() == str(committed["seed"])
    hashes = recorded_hashes(faces_dir)
    hashes.pop("manifest.json")          # holds library versions: not reproducible across machines
    assert hashes == committed["files"]


def test_verify_detects_tampering(faces_dir, tmp_path):
    assert verify(faces_dir, progress=False)["ok"]
    copy = tmp_path / "copy"
    shutil.copytree(faces_dir, copy)
    enc = np.load(copy / "encryption.npy")
    enc[0, 0, 0, 0] *= -1
    np.save(copy / "encryption.npy", enc)
    res = verify(copy, progress=False)
    assert not res["ok"] and res["mismatched"] == ["encryption.npy"] and res["missing"] == []
    assert main(["challenge", "verify", str(copy), "--quiet"]) == 1


@pytest.mark.parametrize("path, value, flagged", [
    (("scheme", "T"), 21, {"manifest.json"}),                    # the regenerated manifest says T=20
    (("recipe", "scheme", "c1"), 0.6, {"manifest.json", "encryption.npy", "label.npy"}),   # regenerates other files
])
def test_verify_checks_the_public_manifest(faces_dir, tmp_path, path, value, flagged):
    copy = tmp_path / "copy"
    shutil.copytree(faces_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    d = m
    for part in path[:-1]:
        d = d[part]
    d[path[-1]] = value
    (copy / "manifest.json").write_text(json.dumps(m))
    res = verify(copy, progress=False)
    assert not res["ok"] and flagged <= set(res["mismatched"])


def test_verify_reports_a_missing_file_as_missing(faces_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(faces_dir, copy)
    (copy / "key" / "sign.npy").unlink()
    res = verify(copy, progress=False)
    assert not res["ok"] and res["missing"] == ["key/sign.npy"] and res["mismatched"] == []


def test_generation_is_atomic_and_never_clobbers(tmp_path):
    r = load_recipe("faces", {"n_priv": 4, "T": 2, "pool_screen": 20})
    out = tmp_path / "ch"
    generate_to_dir(r, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(HidebenchError, match="already holds a challenge"):
        generate_to_dir(r, out, seed=5, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    with pytest.raises(HidebenchError, match="seed must be a non-negative integer"):
        generate_to_dir(r, tmp_path / "neg", seed=-1, progress=False)
    assert not (tmp_path / "neg").exists()
    generate_to_dir(r, out, seed=5, progress=False, overwrite=True)
    assert (out / "encryption.npy").read_bytes() != before["encryption.npy"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no staging folders left


def test_seed_and_overrides_change_the_challenge():
    r = load_recipe("faces", {"n_priv": 6, "T": 3, "pool_screen": 30})
    big_seed = 123456789123456789
    a, b = generate(r, progress=False), generate(r, seed=big_seed, progress=False)
    assert a.view.encryptions.shape == (18, 32, 32, 3)
    assert not np.array_equal(a.view.encryptions, b.view.encryptions)
    assert b.key.seed == big_seed
    assert str(big_seed) not in json.dumps(b.manifest)   # the seed lives only in the key
    assert a.manifest["recipe"] == b.manifest["recipe"]
    # every public slot's pool region (resized regions: no offsets), the same again from the seed
    o = a.public_origin
    assert o.shape == (6 * 3 * 4, 3) and not o[:, 1:].any()
    assert 0 <= o[:, 0].min() and o[:, 0].max() < a.manifest["data"]["pool"]["accepted"]
    assert np.array_equal(generate(r, progress=False).public_origin, o)


def test_cli_round_trip_generate_attack_score(faces_dir, tmp_path, capsys):
    assert main(["attack", "identity", "--challenge", str(faces_dir), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["score", "--challenge", str(faces_dir), "--decryption", str(tmp_path / "run" / "decryption.npy"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["challenge"]
    assert set(scores) == {"Max_SSIM", "Mean_SSIM", "Min_L2", "Mean_L2"}
    assert -0.2 < scores["Max_SSIM"] < 0.3        # |encryption| alone reveals little structure
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["metrics"]["challenge"] == pytest.approx(scores)
    assert record["oracles"] == [] and "numpy" in record["versions"]
    assert main(["challenge", "show", str(faces_dir), "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 10_000


def test_score_refuses_bad_input(faces_dir, tmp_path, capsys):
    E = len(np.load(faces_dir / "label.npy"))
    cases = {
        "shape": np.zeros((E, 16, 16, 3), np.float32),
        "NaN": np.full((E, 32, 32, 3), np.nan, np.float32),
    }
    for word, arr in cases.items():
        np.save(tmp_path / "d.npy", arr)
        assert main(["score", "--challenge", str(faces_dir), "--decryption", str(tmp_path / "d.npy")]) == 2
        assert word in capsys.readouterr().err
    assert main(["score", "--challenge", str(faces_dir), "--decryption", str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    nokey = tmp_path / "public_only"
    nokey.mkdir()
    for f in ("encryption.npy", "label.npy", "manifest.json"):
        (nokey / f).write_bytes((faces_dir / f).read_bytes())
    np.save(tmp_path / "d.npy", np.zeros((E, 32, 32, 3), np.float32))
    assert main(["score", "--challenge", str(nokey), "--decryption", str(tmp_path / "d.npy")]) == 2
    assert "no key/" in capsys.readouterr().err


def test_challenge_loading_errors(faces_dir, tmp_path):
    with pytest.raises(HidebenchError, match="does not exist"):
        load_public(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    np.save(broken / "encryption.npy", np.load(faces_dir / "encryption.npy"))
    with pytest.raises(HidebenchError, match="labels missing"):
        load_public(broken)
    np.save(broken / "label.npy", np.load(faces_dir / "label.npy")[:-3])
    with pytest.raises(HidebenchError, match="do not match"):
        load_public(broken)
    with pytest.raises(HidebenchError, match="manifest states k=6"):
        load_public(faces_dir, k=4)


def test_recipe_validation():
    with pytest.raises(HidebenchError, match="scheme.kk"):
        recipe_from_dict({"name": "x", "scheme": {"kk": 3}})
    with pytest.raises(HidebenchError, match="unknown top-level"):
        recipe_from_dict({"name": "x", "sheme": {}})
    with pytest.raises(HidebenchError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(HidebenchError, match="infeasible"):
        load_recipe("faces", {"k": 6, "c1": 0.1})
    with pytest.raises(HidebenchError, match="n_priv=500"):
        generate(load_recipe("faces", {"n_priv": 500}), progress=False)


def test_recipe_from_a_toml_path(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\nseed = 3\n[private]\nsource = "lfw"\nn_priv = 8\n'
                 '[scheme]\nmode = "inside"\nk = 3\nT = 2\nscheme = "mixup"\n')
    ch = generate(load_recipe(str(p)), progress=False)
    assert ch.view.encryptions.shape == (16, 32, 32, 3) and np.all(ch.key.sign == 1)
    assert ch.manifest["data"]["pool"] is None


def test_instahide2020_replica_from_data_root(data_root, tmp_path):
    """The real recipe, shrunk through overrides so it runs in seconds."""
    out = tmp_path / "ih"
    assert main(["challenge", "generate", "instahide2020", "--out", str(out), "--n-priv", "20", "--T", "5",
                 "--pool-screen", "150", "--quiet", "--data-root", str(data_root)]) == 0
    view, key = load_public(out), load_key(out)
    assert view.encryptions.shape == (100, 32, 32, 3) and view.labels.shape == (100, 10)
    assert view.class_names[0] == "airplane" and key.private.shape == (20, 32, 32, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["pool"]["source"] == "tinyimagenet"
    assert 0.2 < manifest["data"]["pool"]["acceptance_rate"] < 0.95
    assert verify(out, progress=False)["ok"]


def test_augmented_recipe_regenerates_and_keeps_its_key(tmp_path):
    """`augment = true` in a recipe (or --augment): the key holds the crops and flips, the
    release verifies byte for byte, and the manifest's recipe states it."""
    from hidebench.challenge_io import read_manifest

    recipe = load_recipe("faces", {"n_priv": 6, "T": 3, "pool_screen": 30, "augment": True})
    generate_to_dir(recipe, tmp_path / "ch", progress=False)
    key = load_key(tmp_path / "ch")
    assert key.augmentation.shape == (18, 2, 3)
    assert read_manifest(tmp_path / "ch")["recipe"]["scheme"]["augment"] is True
    assert verify(tmp_path / "ch", progress=False)["ok"]
    assert "augment" not in load_recipe("faces").to_dict()["scheme"]
