"""Federated client simulation: models, defenses, the shared update, one simulated client,
and the update harness's outputs."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hidebench.app.harness import run_update_attack
from hidebench.context import ExecutionContext
from hidebench.data import load_source
from hidebench.defenses import client as client_module
from hidebench.defenses import federated
from hidebench.defenses.client import ClientExperiment
from hidebench.defenses.federated import (
    client_update,
    make_batch,
    make_client_model,
    record_bn_stats,
    set_bn_mode,
    simulate_client,
    soft_cross_entropy,
    to_tensor,
)
from hidebench.record import load_record
from hidebench.threat import UpdateThreatModel
from hidebench.types import HidebenchError

CTX = ExecutionContext(device="cpu", progress=False, seed=0)


@pytest.fixture(scope="module")
def faces():
    ds = load_source("lfw", indices=np.arange(0, 200, 20))
    return ds.images, ds.labels


@pytest.mark.parametrize("name", ["lenet", "convnet", "resnet18"])
def test_models_take_32x32_and_are_seeded(name):
    m1, m2 = make_client_model(name, 10, seed=3), make_client_model(name, 10, seed=3)
    x = torch.zeros((2, 3, 32, 32))
    assert m1(x).shape == (2, 10)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert not torch.equal(next(make_client_model(name, 10, seed=4).parameters()), next(m1.parameters()))


def test_shared_gradient_is_what_the_client_computed(faces):
    """Against a plain backward pass: soft-label CE, BatchNorm in train mode, mixed InstaHide labels."""
    images, labels = faces
    model = make_client_model("convnet", 2, seed=0, width=4)
    cfg = ClientExperiment(defense="instahide", k=3, batch_size=4)
    batch = make_batch(images, labels, 2, cfg, seed=1)
    up = client_update(model, batch, cfg)
    ref = make_client_model("convnet", 2, seed=0, width=4)
    ref.train()
    loss = -(torch.as_tensor(batch.soft_labels) * F.log_softmax(ref(to_tensor(batch.inputs)), -1)).sum(1).mean()
    loss.backward()
    for g, p in zip(up.gradient, ref.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
    assert up.n_samples == 4 and len(up.bn_stats) == 4
    # the shared model itself is untouched (no running-stat update, no weight change)
    fresh = make_client_model("convnet", 2, seed=0, width=4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_fedavg_update_is_the_weight_difference_of_local_sgd(faces):
    images, labels = faces
    model = make_client_model("lenet", 2, seed=0)
    cfg = ClientExperiment(batch_size=2, update="fedavg", local_steps=3, local_lr=0.05)
    batch = make_batch(images, labels, 2, cfg)
    up = client_update(model, batch, cfg)
    ref = make_client_model("lenet", 2, seed=0)
    w0 = [p.detach().clone() for p in ref.parameters()]
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        soft_cross_entropy(ref(to_tensor(batch.inputs)), torch.as_tensor(batch.soft_labels)).backward()
        opt.step()
    for g, a, b in zip(up.gradient, w0, ref.parameters()):
        torch.testing.assert_close(g, (a - b.detach()) / (0.05 * 3), rtol=1e-3, atol=1e-5)


def test_eval_mode_batchnorm_uses_running_statistics(faces):
    images, labels = faces
    model = make_client_model("convnet", 2, seed=0, width=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
    x = to_tensor(images[:1])
    set_bn_mode(model, "eval")
    out_eval = model(x)
    set_bn_mode(model, "train")
    assert not torch.allclose(out_eval, model(x))
    cfg = ClientExperiment(batch_size=1, bn_mode="eval")
    assert client_update(model, make_batch(images, labels, 2, cfg), cfg).bn_stats == []
    assert len(record_bn_stats(model, x)) == 4


@pytest.mark.parametrize("defense,mode,k", [("mixup", "inside", 4), ("instahide", "inside", 4), ("instahide", "cross", 5)])
def test_defended_batch_is_the_encryption_of_each_private_image(faces, defense, mode, k):
    images, labels = faces
    rng = np.random.default_rng(0)
    patches = rng.uniform(-1, 1, (20, 32, 32, 3)).astype(np.float32) if mode == "cross" else None
    cfg = ClientExperiment(defense=defense, k=k, mode=mode, batch_size=3)
    b = make_batch(images, labels, 2, cfg, seed=5, public_patches=patches)
    key = b.key
    assert np.array_equal(key.selection[:, 0], [0, 1, 2])            # row i is for private image i
    np.testing.assert_array_equal(b.private, images[:3])
    slots = key.n_private_slots
    mix = sum(key.lambdas[:, j, None, None, None] *
              (images[key.selection[:, j]] if j < slots else patches[key.selection[:, j]]) for j in range(k))
    np.testing.assert_allclose(b.inputs, mix * key.sign, atol=1e-5)
    np.testing.assert_allclose(b.soft_labels.sum(1), key.lambdas[:, :slots].sum(1), atol=1e-5)
    assert (defense == "mixup") == bool(np.all(key.sign == 1))
    assert not np.allclose(b.inputs, b.private)


def test_bad_input_gives_clear_errors(faces):
    images, labels = faces
    with pytest.raises(HidebenchError, match="batch size 11 is larger"):
        make_batch(images, labels, 2, ClientExperiment(batch_size=11))
    with pytest.raises(HidebenchError, match="unknown model 'vgg'"):
        make_client_model("vgg", 10)
    with pytest.raises(HidebenchError, match="client.defense must be one of .*got 'dp'"):
        ClientExperiment(defense="dp")
    with pytest.raises(HidebenchError, match="k must be"):
        ClientExperiment(defense="instahide", k=1)
    with pytest.raises(HidebenchError, match="needs 6 private images"):
        make_batch(images[:4], labels[:4], 2, ClientExperiment(defense="instahide", k=6, batch_size=1))
    with pytest.raises(HidebenchError, match="batch size 201 is larger than the data source 'lfw'"):
        simulate_client(ClientExperiment(data="lfw", batch_size=201), CTX)
    with pytest.raises(HidebenchError, match="client.model must be one of .*got 'lenet5'"):
        ClientExperiment(model="lenet5")
    with pytest.raises(HidebenchError, match=r"unknown key\(s\) client.seed"):
        ClientExperiment.from_dict({"seed": 1})


def test_harness_refuses_before_touching_out(tmp_path):
    out = tmp_path / "run"
    for call, match in [
            (lambda: run_update_attack("identity", {}, out, ctx=CTX), "identity attacks a public release"),
            (lambda: run_update_attack("nope", {}, out, ctx=CTX), "unknown attack 'nope'"),
            (lambda: run_update_attack("dlg", {"model": "vgg"}, out, ctx=CTX), "client.model must be one of"),
            (lambda: run_update_attack("dlg", {}, out, config={"iterations": -1}, ctx=CTX), "dlg.iterations"),
            (lambda: run_update_attack("dlg", {}, out, threat={"knows_everything": True}, ctx=CTX),
             r"unknown key\(s\) threat.knows_everything"),
            (lambda: run_update_attack("dlg", {"batch_size": 201}, out, ctx=CTX), "larger than the data source")]:
        with pytest.raises(HidebenchError, match=match):
            call()
        assert not out.exists()


def test_client_choices_live_in_the_torch_free_config():
    for name in ("MODELS", "DEFENSES", "UPDATES", "BN_MODES"):
        assert getattr(federated, name) is getattr(client_module, name)


def test_simulated_client_is_deterministic_from_the_seed():
    exp = ClientExperiment(defense="instahide", k=4, batch_size=2)
    a, b = simulate_client(exp, CTX), simulate_client(exp, CTX)
    c = simulate_client(exp, CTX.replace(seed=1))
    np.testing.assert_array_equal(a.batch.inputs, b.batch.inputs)
    assert all(torch.equal(x, y) for x, y in zip(a.update.gradient, b.update.gradient))
    assert a.data == b.data and a.data["indices"] != c.data["indices"]
    assert a.defense_k == 4 and a.n_classes == 2 and a.weights["weights"] == "untrained"
    assert a.update.n_samples == 2 and a.batch.key.selection.shape == (2, 4)


def test_run_update_attack_writes_record_grid_and_a_scoreable_challenge(tmp_path):
    """Chaining: the recovered encryptions are a challenge-format public view with the client's key."""
    from hidebench.challenge_io import load_key, load_public
    from hidebench.metrics import challenge_metric

    out = tmp_path / "run"
    exp = ClientExperiment(defense="instahide", k=4, batch_size=2)
    record = run_update_attack("dlg", exp, out, config={"iterations": 1}, threat=UpdateThreatModel(), ctx=CTX)
    rec = json.loads((out / "record.json").read_text())
    assert rec == json.loads(json.dumps(record.to_dict()))
    assert load_record(out / "record.json").family == "update"
    assert rec["threat_model"]["knows_k"] and rec["source"]["model"]["weights"] == "untrained"
    assert rec["setting"]["scheme"] == "instahide" and rec["setting"]["k"] == 4 and rec["setting"]["batch_size"] == 2
    assert rec["setting"]["T"] is None and rec["setting"]["n_priv"] is None
    assert rec["source"]["experiment"] == exp.to_dict() and rec["source"]["data"]["fingerprint"]
    assert rec["context"]["device"] == "cpu" and rec["seed"] == 0 and rec["family"] == "update"
    assert {"vs_input", "vs_private", "label_accuracy", "vs_private_in_mix_max_ssim"} <= set(rec["metrics"])
    assert set(rec["metrics"]["vs_input"]) == {"ssim", "psnr", "mse"}
    assert (out / "grid.png").stat().st_size > 1000
    view = load_public(out / "challenge")
    key = load_key(out / "challenge", view)
    assert view.k == 4 and view.scheme == "instahide" and len(view) == 2
    np.testing.assert_allclose(view.encryptions, np.clip(np.load(out / "recovered.npy"), -1, 1))
    assert 0 <= challenge_metric(view.encryptions, key)["Max_SSIM"] <= 1
