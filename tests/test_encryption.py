import numpy as np
import pytest
from helpers import random_images

from hidebench.defenses.instahide import EncryptionConfig, encrypt, sample_lambdas
from hidebench.types import HidebenchError


@pytest.mark.parametrize("mode,k", [("cross", 6), ("cross", 3), ("inside", 4), ("inside", 2)])
def test_coefficients_obey_constraints(mode, k):
    cfg = EncryptionConfig(k=k, mode=mode, c1=0.65, c2=0.3)
    lam = sample_lambdas(np.random.default_rng(0), 20000, cfg)
    assert lam.shape == (20000, k)
    assert np.allclose(lam.sum(1), 1.0)
    assert lam.min() >= 0 and lam.max() <= 0.65
    if mode == "cross":
        assert (lam[:, 0] + lam[:, 1]).min() >= 0.3
    # exchangeable within the private slots and within the public ones
    m = lam.mean(0)
    slots = 2 if mode == "cross" else k
    assert np.ptp(m[:slots]) < 0.01 and (slots == k or np.ptp(m[slots:]) < 0.01)


def _mix_from_key(key, bank):
    slots = key.n_private_slots
    out = np.zeros(key.sign.shape, dtype=np.float64)
    for j in range(key.selection.shape[1]):
        src = key.private if j < slots else bank
        out += key.lambdas[:, j, None, None, None] * src[key.selection[:, j]]
    return out


def test_encryption_is_signed_mix(tiny_cross):
    view, key, bank, cfg = tiny_cross
    mix = _mix_from_key(key, bank)
    assert set(np.unique(key.sign)) == {-1, 1}
    assert np.allclose(view.encryptions, key.sign * mix, atol=1e-5)
    assert np.allclose(np.abs(view.encryptions), np.abs(mix), atol=1e-5)
    assert 0.4 < (key.sign == 1).mean() < 0.6


def test_mixup_has_no_mask():
    rng = np.random.default_rng(1)
    priv = random_images(rng, 10)
    view, key = encrypt(priv, rng.integers(0, 3, 10), 3, EncryptionConfig(k=3, mode="inside", scheme="mixup", T=4), seed=2)
    assert np.all(key.sign == 1)
    assert np.allclose(view.encryptions, _mix_from_key(key, None), atol=1e-5)


def test_labels_are_mixed_from_private_slots(tiny_cross):
    view, key, _, _ = tiny_cross
    expected = np.zeros_like(view.labels)
    for e in range(len(view)):
        for j in range(2):
            expected[e, key.private_labels[key.selection[e, j]]] += key.lambdas[e, j]
    assert np.allclose(view.labels, expected)
    assert np.allclose(view.labels.sum(1), key.lambdas[:, :2].sum(1))   # not renormalised


def test_slots_and_release_order(tiny_cross):
    view, key, bank, cfg = tiny_cross
    n = len(key.private)
    assert np.array_equal(np.bincount(key.selection[:, 0], minlength=n), np.full(n, cfg.T))
    assert np.all(key.selection[:, 0] != key.selection[:, 1])
    assert key.selection[:, :2].max() < n and key.selection[:, 2:].max() < len(bank)
    assert not np.all(np.diff(key.selection[:, 0]) >= 0), "release order must be shuffled"
    assert view.T == cfg.T and view.n_private == n


def test_inside_dataset_slots_are_distinct_private_images():
    rng = np.random.default_rng(3)
    priv = random_images(rng, 7)
    view, key = encrypt(priv, rng.integers(0, 2, 7), 2, EncryptionConfig(k=5, mode="inside", T=30), seed=4)
    s = np.sort(key.selection, axis=1)
    assert np.all(s[:, 1:] != s[:, :-1])
    assert key.selection.max() < 7 and key.n_private_slots == 5
    assert np.allclose(view.labels.sum(1), 1.0)


def test_deterministic_per_seed(tiny_cross):
    view, key, bank, cfg = tiny_cross
    v2, k2 = encrypt(key.private, key.private_labels, 4, cfg, seed=11, public_patches=bank)
    assert np.array_equal(view.encryptions, v2.encryptions) and np.array_equal(key.sign, k2.sign)
    v3, _ = encrypt(key.private, key.private_labels, 4, cfg, seed=12, public_patches=bank)
    assert not np.array_equal(view.encryptions, v3.encryptions)


def test_no_seed_uses_os_entropy_and_records_it(tiny_cross):
    _, key, bank, cfg = tiny_cross
    va, ka = encrypt(key.private, key.private_labels, 4, cfg, public_patches=bank)
    vb, kb = encrypt(key.private, key.private_labels, 4, cfg, public_patches=bank)
    assert ka.seed != kb.seed and ka.seed.bit_length() > 64
    vc, _ = encrypt(key.private, key.private_labels, 4, cfg, seed=ka.seed, public_patches=bank)
    assert np.array_equal(va.encryptions, vc.encryptions)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=6, c1=0.15), "infeasible"),
    (dict(k=2, mode="inside", c1=0.5), "infeasible"),
    (dict(c2=1.2), "c2"),
    (dict(c1=0.4, c2=0.9), "infeasible"),
    (dict(k=2, mode="cross"), "k >= 3"),
    (dict(T=0), "T"),
    (dict(scheme="foo"), "scheme"),
    (dict(mode="outside"), "mode"),
])
def test_infeasible_parameters_rejected(kwargs, match):
    with pytest.raises(HidebenchError, match=match):
        EncryptionConfig(**kwargs)


def test_tight_constraints_fail_fast_instead_of_looping():
    cfg = EncryptionConfig(k=3, mode="cross", c1=0.3334, c2=0.3)  # max <= 0.3334 with 3 terms: almost never
    with pytest.raises(HidebenchError, match="accept fewer"):
        sample_lambdas(np.random.default_rng(0), 100, cfg)


def test_bad_inputs_rejected():
    rng = np.random.default_rng(0)
    priv = random_images(rng, 3)
    with pytest.raises(HidebenchError, match="at least 4 distinct"):
        encrypt(priv, [0, 1, 0], 2, EncryptionConfig(k=4, mode="inside", T=1), seed=0)
    with pytest.raises(HidebenchError, match="public patches"):
        encrypt(priv, [0, 1, 0], 2, EncryptionConfig(k=4, mode="cross", T=1), seed=0)
    bad = priv.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(HidebenchError, match="NaN"):
        encrypt(bad, [0, 1, 0], 2, EncryptionConfig(k=2, mode="inside", T=1), seed=0)
    with pytest.raises(HidebenchError, match="labels"):
        encrypt(priv, [0, 1], 2, EncryptionConfig(k=2, mode="inside", T=1), seed=0)
    with pytest.raises(HidebenchError, match=r"\[-1.0, 1.0\]|\[-1, 1\]"):
        encrypt(priv * 3, [0, 1, 0], 2, EncryptionConfig(k=2, mode="inside", T=1), seed=0)


def test_augmented_release_mixes_fresh_crops_and_flips():
    """augment=True: each (encryption, private slot) mixes its own crop-and-flip of the image,
    recorded in the key; the same seed without augmentation gives the plain release unchanged."""
    from hidebench.defenses.augment import shift_flip

    rng = np.random.default_rng(3)
    priv, y = random_images(rng, 12), rng.integers(0, 3, 12)
    bank = random_images(rng, 20)
    cfg = EncryptionConfig(k=4, mode="cross", T=5, augment=True)
    view, key = encrypt(priv, y, 3, cfg, seed=9, public_patches=bank)
    aug = key.augmentation
    assert aug.shape == (60, 2, 3) and aug.dtype == np.int8
    assert np.abs(aug[..., :2]).max() == 4 and len(np.unique(aug[..., :2].reshape(-1, 2), axis=0)) > 20
    mix = np.zeros(view.encryptions.shape)
    for j in range(4):
        src = shift_flip(priv[key.selection[:, j]], aug[:, j]) if j < 2 else bank[key.selection[:, j]]
        mix += key.lambdas[:, j, None, None, None] * src
    np.testing.assert_allclose(view.encryptions, key.sign * mix, atol=1e-5)
    plain_view, plain_key = encrypt(priv, y, 3, cfg.replace(augment=False), seed=9, public_patches=bank)
    np.testing.assert_array_equal(plain_key.selection, key.selection)
    np.testing.assert_array_equal(plain_key.sign, key.sign)
    assert plain_key.augmentation is None and not np.allclose(plain_view.encryptions, view.encryptions)
    assert "augment" not in cfg.replace(augment=False).to_dict() and cfg.to_dict()["augment"] is True
