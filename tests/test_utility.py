"""Utility: training on encryptions the authors' way, resume, bad input (tiny data, seconds)."""
import json

import numpy as np
import pytest
import torch

from hidebench.app.cli import main
from hidebench.defenses.augment import crop_flip
from hidebench.defenses.instahide import EncryptionConfig
from hidebench.defenses.utility.batches import one_epoch
from hidebench.defenses.utility.config import UtilityConfig
from hidebench.defenses.utility.training import CHECKPOINT, train_classifier
from hidebench.types import HidebenchError, ImageSet


def toy_set(n, seed):
    """Two classes a tiny ConvNet separates at once: noise with a red or a blue tint."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(-1, 0.2, size=(n, 32, 32, 3))
    x[y == 0, ..., 0] += 0.8
    x[y == 1, ..., 2] += 0.8
    return ImageSet(x.astype(np.float32), y, ["red", "blue"], "toy")


TINY = dict(model="convnet", width=8, batch_size=16, epochs=3, lr=0.05, eval_batch=64, K=4)


def test_crop_flip_matches_padded_crop():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(40, 32, 32, 3)).astype(np.float32)
    out, params = crop_flip(x, rng)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), constant_values=-1)
    for img, o, (dy, dx, flip) in zip(padded, out, params):
        ref = img[4 + dy: 36 + dy, 4 + dx: 36 + dx]
        if flip:   # the flip is applied to the image before the shift
            ref = np.pad(img[4:36, 4:36][:, ::-1], ((4, 4), (4, 4), (0, 0)), constant_values=-1)[4 + dy: 36 + dy,
                                                                                                  4 + dx: 36 + dx]
        np.testing.assert_array_equal(o, ref)
    assert len(np.unique(params[:, :2], axis=0)) > 10 and 0 < params[:, 2].mean() < 1


def test_vanilla_training_learns():
    res = train_classifier(toy_set(128, 0), toy_set(64, 1), None, UtilityConfig(**TINY), seed=0, progress=False)
    assert res.test_accuracy_clean >= 0.9
    assert res.test_accuracy_encrypted is None
    assert res.curves["train_loss"][-1] < res.curves["train_loss"][0]


@pytest.mark.parametrize("scheme", ["instahide", "mixup"])
def test_training_batches_are_encryptions_with_mixed_labels(scheme):
    train = toy_set(64, 0)
    cfg = EncryptionConfig(k=4, mode="inside", scheme=scheme)
    rng = np.random.default_rng(5)
    batches = list(one_epoch(train.images, train.labels, 2, cfg, None, 16, rng, augment=False))
    assert len(batches) == 4
    seen = []
    for b in batches:
        key = b.key
        mix = np.einsum("ej,ej...->e...", key.lambdas, key.private[key.selection])
        np.testing.assert_allclose(b.images, mix * key.sign, atol=1e-5)
        if scheme == "mixup":
            assert np.all(key.sign == 1)
        want = np.zeros((16, 2), np.float32)
        np.add.at(want, (np.arange(16)[:, None], key.private_labels[key.selection]), key.lambdas)
        np.testing.assert_allclose(b.targets, want, atol=1e-6)
        # the batch's private images are distinct training images, each encrypted once as slot 0
        rows = [int(np.flatnonzero((train.images == p).all(axis=(1, 2, 3)))[0]) for p in key.private]
        assert sorted(key.selection[:, 0]) == list(range(16))
        seen += rows
    assert sorted(seen) == list(range(64))          # one epoch: every training image once


def test_fresh_encryptions_every_epoch():
    """The same image is encrypted anew each epoch (another mask, other partners and weights)."""
    train, test = toy_set(64, 0), toy_set(32, 1)
    cfg = EncryptionConfig(k=2, mode="inside", scheme="instahide")
    firsts = []

    import hidebench.defenses.utility.training as training

    real = training.one_epoch

    def spy(*a, **kw):
        batches = list(real(*a, **kw))
        firsts.append(batches[0].key)
        return iter(batches)

    training.one_epoch = spy
    try:
        train_classifier(train, test, cfg, UtilityConfig(**{**TINY, "epochs": 2}), seed=3, progress=False)
    finally:
        training.one_epoch = real
    a, b = firsts
    assert not np.array_equal(a.sign, b.sign)
    assert not np.allclose(a.private, b.private) or not np.allclose(a.lambdas, b.lambdas)


def check_resume_is_exact(train, test, scheme, cfg, tmp_path):
    """Train uninterrupted (checkpoints in tmp_path/a), then interrupted after epoch 1 and resumed
    (tmp_path/b): the resumed run must end with the same weights, curves and accuracy."""
    full = train_classifier(train, test, scheme, cfg, seed=1, checkpoint_dir=tmp_path / "a", progress=False)

    def stop(epoch, curves):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(train, test, scheme, cfg, seed=1, checkpoint_dir=tmp_path / "b", progress=False, on_epoch=stop)
    resumed = train_classifier(train, test, scheme, cfg, seed=1, checkpoint_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.curves["train_loss"] == full.curves["train_loss"]
    assert resumed.test_accuracy_encrypted == full.test_accuracy_encrypted


def test_resume_gives_the_same_weights(tmp_path):
    train, test = toy_set(64, 0), toy_set(32, 1)
    scheme = EncryptionConfig(k=2, mode="inside", scheme="instahide")
    cfg = UtilityConfig(**TINY)
    check_resume_is_exact(train, test, scheme, cfg, tmp_path)

    # another seed is another run: its checkpoint is refused, not silently continued
    with pytest.raises(HidebenchError, match="other settings"):
        train_classifier(train, test, scheme, cfg, seed=2, checkpoint_dir=tmp_path / "b", progress=False)
    (tmp_path / "b" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(HidebenchError, match="not a readable utility checkpoint"):
        train_classifier(train, test, scheme, cfg, seed=1, checkpoint_dir=tmp_path / "b", progress=False)


def test_bad_input():
    train, test = toy_set(64, 0), toy_set(32, 1)
    with pytest.raises(HidebenchError, match="more than a batch of 4 holds"):
        train_classifier(train, test, EncryptionConfig(k=6, mode="inside"), UtilityConfig(**{**TINY, "batch_size": 4}),
                         progress=False)
    with pytest.raises(HidebenchError, match="utility.model must be one of"):
        UtilityConfig(model="vgg")
    with pytest.raises(HidebenchError, match="utility.epochs must be an integer >= 1"):
        UtilityConfig(epochs=0)
    with pytest.raises(HidebenchError, match="cross-dataset training needs public patches"):
        train_classifier(train, test, EncryptionConfig(k=4, mode="cross"), UtilityConfig(**TINY), progress=False)


def test_cli_on_embedded_faces(tmp_path, capsys):
    """`hidebench utility faces` runs with no data root; a rerun resumes (nothing to retrain)."""
    args = ["utility", "faces", "--out", str(tmp_path / "u"), "--epochs", "1", "--K", "2", "--set", "widths=[8,16,16]",
            "--quiet"]
    assert main(args) == 0
    rec = json.loads((tmp_path / "u" / "record.json").read_text())
    assert rec["family"] == "utility" and rec["setting"]["scheme"] == "instahide" and rec["setting"]["k"] == 6
    assert rec["setting"]["train"] == "lfw[0::2]" and rec["setting"]["test"] == "lfw[1::2]"
    for m in ("test_accuracy_clean", "test_accuracy_encrypted"):
        assert 0 <= rec["metrics"][m] <= 1
    assert len(rec["stats"]["curves"]["train_loss"]) == 1
    assert main(args) == 0
    assert json.loads((tmp_path / "u" / "record.json").read_text())["stats"]["resumed_from_epoch"] == 1
    assert main(["utility", "faces", "--out", str(tmp_path / "v"), "--set", "model=vgg"]) == 2
    assert main(["utility", "faces", "--out", str(tmp_path / "v"), "--epochs", "0"]) == 2
    assert "utility.epochs must be an integer >= 1" in capsys.readouterr().err


def test_encrypted_test_chunks_are_random_subsets():
    """A class-sorted test set (an ImageFolder tree) is not mixed class by class: every chunk holds
    several classes, and every test image is encrypted K times as its own encryptions' owner."""
    from hidebench.defenses.utility.batches import encrypted_test_sets

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)                       # sorted by class, as cifar10:test is
    images = rng.uniform(-1, 1, size=(200, 8, 8, 3)).astype(np.float32)
    seen = []
    for idx, enc, owner in encrypted_test_sets(images, labels, 4, EncryptionConfig(k=4, mode="inside"), None, 3, 50, rng):
        assert len(np.unique(labels[idx])) >= 3
        assert len(enc) == 3 * len(idx) and np.array_equal(np.bincount(owner, minlength=len(idx)), np.full(len(idx), 3))
        seen += list(idx)
    assert sorted(seen) == list(range(200))
