"""The contract every registered attack meets, parametrised over the registry: a new attack is
covered the moment it is registered. On a tiny case (the attack's preset `tiny`,
challenge_data/presets/NAME/tiny.toml), each attack runs from Python and from `hidebench attack
NAME`, writes a valid run record, beats the trivial floor, is deterministic for a fixed seed,
and refuses what its threat model does not grant. Release attacks on images run on a small faces
release, those on TextHide releases (modality 'text') on the session's small TextHide release
(conftest.text_release), whose trivial floor is the encryptions themselves taken as decryptions."""
import numpy as np
import pytest

from hidebench.app.cli import main
from hidebench.attacks.base import ATTACKS, get_attack
from hidebench.context import ExecutionContext
from hidebench.defenses.challenge import generate_to_dir
from hidebench.recipes import load_recipe
from hidebench.record import SCHEMA_VERSION, load_record
from hidebench.stock import load_preset, preset_names
from hidebench.threat import ReleaseThreatModel, UpdateThreatModel
from hidebench.types import HidebenchError

get_attack("identity")                       # registers the built-in attacks
RELEASE = sorted(n for n, c in ATTACKS.items() if c.family == "release" and c.modality == "image")
TEXT_RELEASE = sorted(n for n, c in ATTACKS.items() if c.family == "release" and c.modality == "text")
UPDATE = sorted(n for n, c in ATTACKS.items() if c.family == "update")
CTX = ExecutionContext(device="cpu", progress=False, seed=3)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract") / "ch"
    generate_to_dir(load_recipe("faces", {"n_priv": 8, "T": 8, "pool_screen": 60}), d, progress=False)
    return d


@pytest.fixture(scope="module")
def identity_floor(release, tmp_path_factory):
    from hidebench.app.harness import run_release_attack

    rec = run_release_attack("identity", release, tmp_path_factory.mktemp("floor"), ctx=CTX)
    return rec.metrics["challenge"]["Max_SSIM"]


def _tiny(name: str) -> dict:
    """The attack's quick preset (the same the CLI loads with `--config tiny`), {} without one."""
    return load_preset(name, "tiny") if "tiny" in preset_names(name) else {}


def _config_args(name: str) -> list[str]:
    return ["--config", "tiny"] if "tiny" in preset_names(name) else []


def test_registry_holds_both_families():
    assert "identity" in RELEASE and "carlini" in RELEASE
    assert {"dlg", "inverting_gradients"} <= set(UPDATE)
    assert {"texthide_masks", "texthide_unmix", "texthide_invert"} <= set(TEXT_RELEASE)


@pytest.mark.parametrize("name", RELEASE)
def test_release_attack_contract(name, release, identity_floor, tmp_path):
    from hidebench.app.harness import run_release_attack

    cls = ATTACKS[name]
    cfg = _tiny(name)
    a = run_release_attack(name, release, tmp_path / "a", config=cfg, ctx=CTX)
    b = run_release_attack(name, release, tmp_path / "b", config=cfg, ctx=CTX)
    rec = load_record(tmp_path / "a" / "record.json")
    assert rec.schema_version == SCHEMA_VERSION and rec.family == "release" and rec.attack == name
    assert rec.setting["T"] == 8 and rec.setting["n_priv"] == 8 and rec.seed == 3
    assert np.array_equal(np.load(tmp_path / "a" / "decryption.npy"), np.load(tmp_path / "b" / "decryption.npy"))
    assert a.metrics["challenge"] == b.metrics["challenge"]
    if name != "identity":
        assert a.metrics["challenge"]["Max_SSIM"] > identity_floor + 0.05
    assert main(["attack", name, "--challenge", str(release), "--out", str(tmp_path / "cli"), "--seed", "3",
                 "--device", "cpu", "--quiet", *_config_args(name)]) == 0
    assert np.array_equal(np.load(tmp_path / "cli" / "decryption.npy"), np.load(tmp_path / "a" / "decryption.npy"))
    refused = [o for o in ("pairs", "assignment", "lambdas") if o not in cls.uses_oracles]
    for part in refused:
        with pytest.raises(HidebenchError, match="cannot use oracle"):
            cls(cfg, ReleaseThreatModel(oracles=(part,)))


@pytest.fixture(scope="module")
def text_floor(text_release):
    """The max cosine of the encryptions themselves, taken as decryptions (masked: about 0)."""
    from hidebench.text.metrics import decryption_cosine
    from hidebench.text.release import load_text_key, load_text_public

    return decryption_cosine(load_text_public(text_release).encryptions, load_text_key(text_release))["max_cosine"]


@pytest.mark.parametrize("name", TEXT_RELEASE)
def test_text_release_attack_contract(name, text_release, text_floor, release, tmp_path):
    from hidebench.app.harness import run_release_attack
    from hidebench.text.threat import TextThreatModel

    cls = ATTACKS[name]
    cfg = _tiny(name)
    a = run_release_attack(name, text_release, tmp_path / "a", config=cfg, ctx=CTX)
    b = run_release_attack(name, text_release, tmp_path / "b", config=cfg, ctx=CTX)
    rec = load_record(tmp_path / "a" / "record.json")
    assert rec.schema_version == SCHEMA_VERSION and rec.family == "release" and rec.attack == name
    assert rec.setting["scheme"] == "texthide" and rec.setting["T"] == 6 and rec.setting["n_priv"] == 40
    assert rec.setting["m"] == 4 and rec.seed == 3
    assert np.array_equal(np.load(tmp_path / "a" / "decryption.npy"), np.load(tmp_path / "b" / "decryption.npy"))
    assert a.metrics["representation"] == b.metrics["representation"]
    assert a.metrics["representation"]["max_cosine"] > text_floor + 0.3
    assert main(["attack", name, "--challenge", str(text_release), "--out", str(tmp_path / "cli"), "--seed", "3",
                 "--device", "cpu", "--quiet", *_config_args(name)]) == 0
    assert np.array_equal(np.load(tmp_path / "cli" / "decryption.npy"), np.load(tmp_path / "a" / "decryption.npy"))
    for part in [o for o in ("masks", "assignment") if o not in cls.uses_oracles]:
        with pytest.raises(HidebenchError, match="cannot use oracle"):
            cls(cfg, TextThreatModel(oracles=(part,)))
    with pytest.raises(HidebenchError, match="not a TextHide release"):      # an image release is refused
        run_release_attack(name, release, tmp_path / "x", ctx=CTX)
    assert not (tmp_path / "x").exists()


def test_image_attacks_refuse_a_text_release(text_release, tmp_path):
    from hidebench.app.harness import run_release_attack

    with pytest.raises(HidebenchError, match="TextHide release"):
        run_release_attack("identity", text_release, tmp_path / "x", ctx=CTX)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", UPDATE)
def test_update_attack_contract(name, tmp_path):
    from hidebench.app.harness import run_update_attack
    from hidebench.defenses.client import ClientExperiment

    cfg = _tiny(name)
    exp = ClientExperiment.from_dict({"data": "lfw", "model": "lenet", "defense": "none", "batch_size": 1})
    ctx = CTX.replace(seed=0)    # at some seeds the untrained model already fits the image: a near-zero gradient
    a = run_update_attack(name, exp, tmp_path / "a", config=cfg, ctx=ctx)
    run_update_attack(name, exp, tmp_path / "b", config=cfg, ctx=ctx)
    rec = load_record(tmp_path / "a" / "record.json")
    assert rec.schema_version == SCHEMA_VERSION and rec.family == "update" and rec.attack == name
    assert np.array_equal(np.load(tmp_path / "a" / "recovered.npy"), np.load(tmp_path / "b" / "recovered.npy"))
    assert a.metrics["vs_input"]["ssim"] > 0.3            # a blank guess scores about 0
    assert main(["attack", name, "--out", str(tmp_path / "cli"), "--data", "lfw", "--model", "lenet",
                 "--batch-size", "1", "--seed", "0", "--device", "cpu", "--quiet", *_config_args(name)]) == 0
    assert np.array_equal(np.load(tmp_path / "cli" / "recovered.npy"), np.load(tmp_path / "a" / "recovered.npy"))
    with pytest.raises(HidebenchError, match="unknown key"):
        UpdateThreatModel.from_dict({"oracles": ["pairs"]})
    from hidebench.app.harness import run_release_attack

    with pytest.raises(HidebenchError, match="federated update"):
        run_release_attack(name, tmp_path, tmp_path / "x")
