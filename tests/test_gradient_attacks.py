"""DLG and Inverting Gradients on a tiny LeNet (8x8 images, so that each attack takes seconds):
recovery, labels, defenses, and what the threat model grants."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hidebench.attacks.base import ATTACKS, UpdateAttack, get_attack
from hidebench.attacks.gradient.matching import GradientMatcher, largest_remainder, recover_labels
from hidebench.context import ExecutionContext
from hidebench.data import load_source
from hidebench.defenses.client import ClientExperiment
from hidebench.defenses.federated import client_update, make_batch, make_client_model
from hidebench.metrics import matched_set_metric
from hidebench.threat import ReleaseThreatModel, UpdateThreatModel
from hidebench.types import HidebenchError

S = 8   # image size of the tiny tests
CTX = ExecutionContext(device="cpu", progress=False, seed=0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """lfw faces and non-faces, 4x4-average-pooled to 8x8."""
    ds = load_source("lfw", indices=[150, 3, 7, 9, 11, 160])
    return ds.images.reshape(-1, S, 32 // S, S, 32 // S, 3).mean((2, 4)), ds.labels


def _attack(tiny, attack, defense="none", k=4, B=1, threat=None, model=None, **cfg):
    """The client's update on the tiny images, as the threat model hands it to the attacker."""
    images, labels = tiny
    model = model or make_client_model("lenet", 2, seed=0, image_size=S)
    exp = ClientExperiment(defense=defense, k=k, batch_size=B)
    batch = make_batch(images, labels, 2, exp, seed=0)
    up = client_update(model, batch, exp)
    threat = threat or UpdateThreatModel()
    seen = threat.attacker_update(up, n_classes=2, labels=batch.soft_labels, defense_k=None if defense == "none" else k)
    res = get_attack(attack)({"image_size": S, **cfg}, threat).run(seen, model, CTX)
    return batch, res


def test_attacks_are_registered():
    assert {"dlg", "inverting_gradients"} <= set(ATTACKS)
    assert all(issubclass(get_attack(n), UpdateAttack) for n in ("dlg", "inverting_gradients"))
    with pytest.raises(HidebenchError, match=r"unknown key\(s\) dlg.steps"):
        get_attack("dlg")({"steps": 3})
    with pytest.raises(HidebenchError, match="inverting_gradients.optimizer must be one of .*got 'sgd'"):
        get_attack("inverting_gradients")({"optimizer": "sgd"})
    with pytest.raises(HidebenchError, match="dlg.label_mode must be one of .*got 'guess'"):
        get_attack("dlg")({"label_mode": "guess"})
    with pytest.raises(HidebenchError, match="inverting_gradients.iterations must be an integer >= 1"):
        get_attack("inverting_gradients")({"iterations": 0})
    with pytest.raises(HidebenchError, match="UpdateThreatModel"):
        get_attack("dlg")({}, ReleaseThreatModel())


def test_gradient_modules_import_no_torch():
    """hidebench.attacks.gradient and hidebench.defenses.client load without torch (the CLI builds its options from
    them at start-up); the package is loaded on its own, apart from the other attack families."""
    code = ("import sys, types\n"
            f"m = types.ModuleType('attacks'); m.__path__ = [{str(ROOT / 'attacks')!r}]; sys.modules['attacks'] = m\n"
            "import hidebench.attacks.gradient, hidebench.defenses.client\n"
            "from hidebench.attacks.base import ATTACKS\n"
            "assert {'dlg', 'inverting_gradients'} <= set(ATTACKS)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_inverting_gradients_picks_its_optimiser_by_model():
    """optimizer 'auto': L-BFGS (300 steps) without BatchNorm, Adam (2000 steps) with it."""
    ig = get_attack("inverting_gradients")
    assert ig().plan(make_client_model("lenet", 2)) == {"optimizer": "lbfgs", "max_iterations": 300}
    assert ig().plan(make_client_model("convnet", 2, width=4)) == {"optimizer": "adam", "max_iterations": 2000}
    assert ig({"iterations": 7}).plan(make_client_model("lenet", 2)) == {"optimizer": "lbfgs", "max_iterations": 7}
    assert ig({"optimizer": "adam"}).plan(make_client_model("lenet", 2))["optimizer"] == "adam"


def test_dlg_recovers_one_image_without_defense(tiny):
    batch, res = _attack(tiny, "dlg", iterations=12)
    assert res.stats["final_gradient_loss"] < 1e-4
    assert matched_set_metric(res.recovered, batch.private)["ssim"] > 0.95
    assert res.labels.argmax(1)[0] == batch.private_labels[0]     # jointly optimised soft label


@pytest.fixture(scope="module")
def ig_plain(tiny):
    return _attack(tiny, "inverting_gradients", optimizer="lbfgs", iterations=15)


def test_inverting_gradients_recovers_one_image_without_defense(ig_plain):
    batch, res = ig_plain
    assert res.stats["label_method"] == "idlg"
    assert matched_set_metric(res.recovered, batch.private)["ssim"] > 0.95


def test_inverting_gradients_adam_reduces_the_objective(tiny):
    images, labels = tiny
    batch, res = _attack(tiny, "inverting_gradients", optimizer="adam", iterations=60, restarts=2, tv=0.05)
    _, short = _attack(tiny, "inverting_gradients", optimizer="adam", iterations=2, restarts=2, tv=0.05)
    assert res.stats["optimizer"] == "adam" and res.stats["iterations"] == 60
    assert res.stats["final_gradient_loss"] < 0.5 * short.stats["final_gradient_loss"]
    assert matched_set_metric(res.recovered, batch.private)["ssim"] > matched_set_metric(short.recovered, batch.private)["ssim"]


def test_instahide_changes_what_the_attacker_recovers(tiny, ig_plain):
    """The attack recovers the encryption, not the private image (Huang et al.'s claim)."""
    plain, r0 = ig_plain
    enc, r1 = _attack(tiny, "inverting_gradients", defense="instahide", optimizer="lbfgs", iterations=15)
    vs_private_plain = matched_set_metric(r0.recovered, plain.private)["ssim"]
    vs_private_enc = matched_set_metric(r1.recovered, enc.private)["ssim"]
    vs_input_enc = matched_set_metric(r1.recovered, enc.inputs)["ssim"]
    assert vs_input_enc > 0.9
    assert vs_private_enc < 0.3 < vs_private_plain - 0.5


def test_label_recovery_is_exact_for_batch_size_one():
    rng = np.random.default_rng(0)
    model = make_client_model("lenet", 10, seed=1, image_size=S)
    cfg = ClientExperiment(batch_size=1)
    for y in range(10):
        x = rng.uniform(-1, 1, (1, S, S, 3)).astype(np.float32)
        up = client_update(model, make_batch(x, np.array([y]), 10, cfg), cfg)
        labels, method = recover_labels(model, up, 10, 1, image_size=S)
        assert method == "idlg" and labels.argmax(1)[0] == y and labels.sum() == 1


def test_label_counts_for_a_batch_and_known_labels(tiny):
    images, labels = tiny
    model = make_client_model("lenet", 2, seed=0, image_size=S)
    cfg = ClientExperiment(batch_size=4)
    up = client_update(model, make_batch(images, labels, 2, cfg), cfg)
    rec, method = recover_labels(model, up, 2, 4, image_size=S)
    assert method == "label-count" and rec.shape == (4, 2)
    assert sorted(rec.argmax(1)) == sorted(labels[:4])
    assert largest_remainder(np.array([0.5, 0.3, 0.2]), 4).tolist() == [2, 1, 1]
    batch, res = _attack(tiny, "dlg", B=2, threat=UpdateThreatModel(knows_labels=True), label_mode="known",
                         iterations=1)
    np.testing.assert_array_equal(res.labels, batch.soft_labels)
    with pytest.raises(HidebenchError, match="knows_labels"):
        _attack(tiny, "dlg", label_mode="known", iterations=1)


def test_the_attack_sees_only_what_the_threat_model_grants(tiny):
    """Labels are used only when granted; an unknown batch size is the assumed one; the
    BatchNorm prior is on only with the statistics granted."""
    images, labels = tiny
    batch, res = _attack(tiny, "inverting_gradients", B=2, threat=UpdateThreatModel(knows_labels=True), iterations=1)
    assert res.stats["label_method"] == "known"
    np.testing.assert_array_equal(res.labels, batch.soft_labels)
    _, res = _attack(tiny, "inverting_gradients", B=2, iterations=1)
    assert res.stats["label_method"] == "label-count"
    _, res = _attack(tiny, "dlg", B=2, threat=UpdateThreatModel(knows_batch_size=False, assumed_batch_size=3),
                     iterations=1)
    assert res.recovered.shape == (3, S, S, 3) and res.labels.shape == (3, 2) and res.stats["batch_size_assumed"] == 3
    exp = ClientExperiment(batch_size=2)
    convnet = make_client_model("convnet", 2, seed=0, width=4)
    up = client_update(convnet, make_batch(np.repeat(np.repeat(images, 4, 1), 4, 2), labels, 2, exp), exp)
    for granted in (False, True):
        seen = UpdateThreatModel(knows_bn_stats=granted).attacker_update(up, n_classes=2)
        assert (seen.bn_stats is not None) == granted and seen.labels is None
        res = get_attack("inverting_gradients")({"iterations": 1}, UpdateThreatModel(knows_bn_stats=granted)).run(
            seen, convnet, CTX)
        assert res.stats["bn_prior"] == granted and res.stats["optimizer"] == "adam"
        assert res.recovered.shape == (2, 32, 32, 3) and np.abs(res.recovered).max() <= 1


@pytest.mark.parametrize("name,distance,steps,bn", [("lenet", "l2", 1, 0.0), ("convnet", "cosine", 1, 0.1),
                                                    ("lenet", "cosine_layerwise", 2, 0.0)])
def test_func_and_loop_implementations_agree(name, distance, steps, bn):
    """Also with the BatchNorm-statistics prior (attacker granted the client's BN batch statistics)."""
    rng = np.random.default_rng(0)
    model = make_client_model(name, 3, seed=0, width=4)
    cfg = ClientExperiment(batch_size=2, update="fedavg" if steps > 1 else "gradient", local_steps=steps)
    up = client_update(model, make_batch(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32), np.array([0, 2]), 3, cfg), cfg)
    X = torch.randn((3, 2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    Y = torch.softmax(torch.randn((3, 2, 3), generator=torch.Generator().manual_seed(1)), -1)
    out = {}
    for impl in ("func", "loop"):
        x = X.clone().requires_grad_(True)
        matcher = GradientMatcher(model, up, distance=distance, impl=impl, bn_weight=bn)
        assert matcher.bn_weight == bn
        loss = matcher.loss(x, Y)
        loss.sum().backward()
        out[impl] = (loss.detach(), x.grad)
    torch.testing.assert_close(out["func"][0], out["loop"][0], rtol=1e-4, atol=1e-6)
    scale = float(out["loop"][1].abs().max())
    torch.testing.assert_close(out["func"][1], out["loop"][1], rtol=1e-3, atol=1e-3 * scale)
    assert (out["func"][0] > 0).all()


def test_matcher_rejects_a_mismatched_update():
    model = make_client_model("lenet", 2, seed=0)
    cfg = ClientExperiment()
    up = client_update(make_client_model("lenet", 3, seed=0), make_batch(np.zeros((1, 32, 32, 3), np.float32),
                                                                  np.array([0]), 3, cfg), cfg)
    with pytest.raises(HidebenchError, match="shared gradient for fc.weight has shape"):
        GradientMatcher(model, up)
    with pytest.raises(HidebenchError, match="unknown gradient distance"):
        GradientMatcher(model, client_update(model, make_batch(np.zeros((1, 32, 32, 3), np.float32),
                                                               np.array([0]), 2, cfg), cfg), distance="l1")
