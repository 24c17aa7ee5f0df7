"""The fast utility recipe (airbench-style, hidebench.defenses.utility.fast): whitening, test-time
flips, lookahead, label smoothing of mixed labels, schedules, training and resume (tiny data, seconds)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images
from test_utility import check_resume_is_exact, toy_set

from hidebench.app.cli import main
from hidebench.defenses.augment import crop_flip
from hidebench.defenses.instahide import EncryptionConfig
from hidebench.defenses.utility.config import UtilityConfig
from hidebench.defenses.utility.fast import FastNet, Lookahead, patch_whitening, smooth_labels, tta_logits
from hidebench.defenses.utility.training import _lr, _whitening_inputs, train_classifier
from hidebench.types import HidebenchError

FAST_TINY = dict(model="fast", widths=[8, 16, 16], batch_size=16, epochs=3, eval_batch=64, K=4, whiten_images=64,
                 whiten_bias_epochs=1)


def _patch_cov(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    out = F.conv2d(x.double(), filters.double()).permute(0, 2, 3, 1).reshape(-1, len(filters))
    return out.T @ out / len(out)


def test_whitening_layer_whitens_training_patches():
    x = torch.as_tensor(random_images(np.random.default_rng(0), 64)).permute(0, 3, 1, 2)
    x = x + 0.3 * torch.roll(x, 1, dims=-1)          # neighbouring pixels correlated, unequal variances
    raw = _patch_cov(x, torch.eye(12).reshape(12, 3, 2, 2))
    assert (raw - torch.diag(torch.diag(raw))).abs().max() > 0.1     # the raw patches are far from white
    exact = _patch_cov(x, patch_whitening(x, eps=0))
    np.testing.assert_allclose(exact.numpy(), np.eye(12), atol=1e-4)
    reg = _patch_cov(x, patch_whitening(x)).numpy()                   # the default regulariser: diag(l / (l + eps))
    np.testing.assert_allclose(reg - np.diag(np.diag(reg)), 0, atol=1e-4)
    assert 0.9 < np.diag(reg).min() and np.diag(reg).max() < 1
    assert np.all(np.diff(np.diag(reg)) <= 1e-9)                      # largest component first

    net = FastNet(2, (8, 8, 8))
    net.set_whitening(patch_whitening(x))
    w = net.whiten.weight
    assert w.shape == (24, 3, 2, 2) and not w.requires_grad
    torch.testing.assert_close(w[12:], -w[:12])


def test_whitening_is_computed_from_what_the_model_trains_on():
    """InstaHide's random signs leave neighbouring pixels of an encryption uncorrelated, so the
    whitening sample must be encryptions (nearly diagonal covariance), not the clean images."""
    train = toy_set(64, 0)
    train.images[:] = random_images(np.random.default_rng(1), 64)
    rng = np.random.default_rng(0)
    clean = _whitening_inputs(train, None, None, 16, 48, rng)
    enc = _whitening_inputs(train, EncryptionConfig(k=2, mode="inside"), None, 16, 48, rng)
    assert clean.shape == enc.shape == (48, 32, 32, 3)

    def off_diagonal(sample):
        c = _patch_cov(torch.as_tensor(sample).permute(0, 3, 1, 2), torch.eye(12).reshape(12, 3, 2, 2)).numpy()
        d = np.sqrt(np.diag(c))
        return np.abs(c / d[:, None] / d[None] - np.eye(12)).max()

    assert off_diagonal(clean) > 0.5 and off_diagonal(enc) < 0.1


def test_tta_averages_logits_over_flips_and_shifts():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))    # linear: views average in input space
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(tta_logits(lin, x, 0), lin(x))
    torch.testing.assert_close(tta_logits(lin, x, 1), 0.5 * (lin(x) + lin(x.flip(-1))))
    torch.testing.assert_close(tta_logits(lin, x.flip(-1), 1), tta_logits(lin, x, 1))      # flip-invariant

    def shifted(v, d):            # out[i, j] = v[i + d, j + d], reflected at the border
        idx = torch.tensor([abs(i + d) if i + d >= 0 else -(i + d) for i in range(8)])
        idx = torch.where(idx > 7, 14 - idx, idx)
        return v[..., idx, :][..., idx]

    mirror = tta_logits(lin, x, 1)
    want = 0.5 * mirror + 0.25 * (tta_logits(lin, shifted(x, -1), 1) + tta_logits(lin, shifted(x, 1), 1))
    torch.testing.assert_close(tta_logits(lin, x, 2), want)


def test_lookahead_update_rule():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False), torch.nn.BatchNorm1d(1))
    w = net[0].weight.detach()
    with torch.no_grad():
        w.fill_(1.0)
    la = Lookahead(net, total_steps=10)
    with torch.no_grad():
        w.fill_(3.0)
        net[1].running_mean.fill_(2.0)
    la.step(4)                                   # not a multiple of 5: nothing happens
    assert float(w[0, 0]) == 3.0
    la.step(5)                                   # d = 0.95^5 (5/10)^3
    d = 0.95 ** 5 * 0.5 ** 3
    assert float(w[0, 0]) == pytest.approx(d * 1 + (1 - d) * 3)
    assert float(net[1].running_mean[0]) == pytest.approx(d * 0 + (1 - d) * 2)         # buffers are averaged too
    assert float(la.avg["0.weight"][0, 0]) == pytest.approx(float(w[0, 0]))
    with torch.no_grad():
        w.fill_(10.0)
    la.finish()                                  # decay 1: the weights become the average
    assert float(w[0, 0]) == pytest.approx(d + (1 - d) * 3)
    with pytest.raises(ValueError):
        la.load_state_dict({"other": torch.zeros(1)})


def test_label_smoothing_of_soft_labels():
    rng = np.random.default_rng(0)
    logits = torch.randn(6, 5, dtype=torch.float64)
    y = torch.as_tensor(rng.integers(0, 5, 6))
    onehot = F.one_hot(y, 5).double()
    ours = -(smooth_labels(onehot, 0.2) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(ours, F.cross_entropy(logits, y, label_smoothing=0.2))
    lam = torch.as_tensor(rng.dirichlet(np.ones(3), 6))                 # a mix of three labels per row
    parts = [F.one_hot(torch.as_tensor(rng.integers(0, 5, 6)), 5).double() for _ in range(3)]
    mixed = sum(lam[:, j: j + 1] * parts[j] for j in range(3))
    torch.testing.assert_close(smooth_labels(mixed, 0.2), sum(lam[:, j: j + 1] * smooth_labels(parts[j], 0.2) for j in range(3)))
    light = 0.7 * mixed                                                  # cross-dataset: public slots carry no label
    torch.testing.assert_close(smooth_labels(light, 0.2).sum(1), light.sum(1))
    assert smooth_labels(light, 0.2).min() > 0


def test_schedules_and_auto_values():
    cfg = UtilityConfig().resolved()
    assert (cfg.model, cfg.schedule, cfg.batch_size, cfg.lookahead, cfg.tta) == ("fast", "triangle", 512, True, 2)
    assert cfg.lr == pytest.approx(0.75) and cfg.warmup_epochs == pytest.approx(0.23 * cfg.epochs)
    assert cfg.weight_decay * cfg.lr == pytest.approx(0.0153 * 512 / 7850.67, rel=1e-4)    # airbench's decay per step
    small = UtilityConfig().resolved(n_train=400)                       # batch lowered to 100: lr follows
    assert small.batch_size == 100 and small.lr == pytest.approx(1.5 * 100 / 1024)
    assert UtilityConfig(lr=0.3).resolved(400).lr == 0.3
    old = UtilityConfig(model="convnet").resolved()
    assert (old.lr, old.batch_size, old.schedule, old.label_smoothing, old.tta) == (0.05, 128, "cosine", 0.0, 0)
    spe = 10
    tri = [_lr(cfg, s, spe) / cfg.lr for s in range(cfg.epochs * spe + 1)]       # + 1: where it would end
    assert tri[0] == pytest.approx(0.2) and max(tri) == pytest.approx(1, abs=0.02) and tri[-1] == pytest.approx(0.07)
    assert int(np.argmax(tri)) == pytest.approx(0.23 * len(tri), abs=1)
    step = UtilityConfig(model="resnet18", schedule="step", lr=0.1, warmup_epochs=0, epochs=8).resolved()
    lrs = [_lr(step, s, spe) for s in range(80)]
    assert lrs[0] == lrs[39] == 0.1 and lrs[40] == lrs[59] == pytest.approx(0.01) and lrs[60] == lrs[-1] == pytest.approx(0.001)
    for bad, match in (({"widths": [8, 8]}, "utility.widths must be a list of 3"), ({"schedule": "linear"}, "utility.schedule"),
                       ({"tta": 3}, "utility.tta"), ({"lr": "fast"}, "utility.lr must be \"auto\""),
                       ({"precision": "fp16"}, "utility.precision"), ({"label_smoothing": 1.0}, "utility.label_smoothing")):
        with pytest.raises(HidebenchError, match=match):
            UtilityConfig(**bad)


def test_alternating_flips_are_the_given_ones():
    x = random_images(np.random.default_rng(0), 8)
    flips = np.array([0, 1] * 4)
    _, params = crop_flip(x, np.random.default_rng(1), 2, flips)
    np.testing.assert_array_equal(params[:, 2], flips)
    assert np.abs(params[:, :2]).max() <= 2


def test_fast_model_learns_a_tiny_two_class_set():
    res = train_classifier(toy_set(128, 0), toy_set(64, 1), None, UtilityConfig(**FAST_TINY), seed=0, progress=False)
    assert res.test_accuracy_clean >= 0.9
    assert res.curves["train_loss"][-1] < res.curves["train_loss"][0]
    enc = train_classifier(toy_set(128, 0), toy_set(64, 1), EncryptionConfig(k=2, mode="inside", scheme="mixup"),
                           UtilityConfig(**FAST_TINY), seed=0, progress=False)
    assert enc.test_accuracy_clean >= 0.75 and enc.test_accuracy_encrypted >= 0.75


def test_fast_resume_gives_the_same_weights(tmp_path):
    """Interrupted after epoch 1 (the whitening bias still training) and resumed: the same weights,
    lookahead average and curves as an uninterrupted run."""
    train, test = toy_set(64, 0), toy_set(32, 1)
    scheme = EncryptionConfig(k=2, mode="inside", scheme="instahide")
    cfg = UtilityConfig(**{**FAST_TINY, "whiten_bias_epochs": 2})
    check_resume_is_exact(train, test, scheme, cfg, tmp_path)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert set(state["lookahead"]) >= {"whiten.weight", "whiten.bias"}


def test_cli_fast_model_on_embedded_faces(tmp_path):
    args = ["utility", "faces", "--out", str(tmp_path / "u"), "--model", "fast", "--epochs", "2", "--K", "2",
            "--set", "widths=[8,16,16]", "--set", "whiten_images=100", "--quiet"]
    assert main(args) == 0
    rec = json.loads((tmp_path / "u" / "record.json").read_text())
    assert rec["config"]["model"] == "fast" and rec["config"]["schedule"] == "triangle"     # "auto" resolved
    assert rec["config"]["batch_size"] == 25 and rec["config"]["lr"] == pytest.approx(1.5 * 25 / 1024)
    assert len(rec["stats"]["curves"]["test_accuracy_clean"]) == 2
    assert 0 <= rec["metrics"]["test_accuracy_encrypted"] <= 1
