"""Property tests (hypothesis): the challenge metric and the encryption's invariants hold for
random schemes, sizes and image values, not only for the hand-picked cases of the unit tests."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hidebench.defenses.instahide import EncryptionConfig, encrypt
from hidebench.metrics import challenge_metric, mse, ssim, ssim_skimage
from hidebench.types import HidebenchError

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

unit = st.floats(-1, 1, width=32, allow_nan=False)


def images(shape):
    """float32 images in [-1, 1] with hypothesis-chosen values (edges, zeros, repeats)."""
    return arrays(np.float32, shape, elements=unit)


def smooth_images(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    x = rng.uniform(-1, 1, size=(n, size // 4, size // 4, 3))
    return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2).astype(np.float32)


@st.composite
def schemes(draw):
    """A feasible EncryptionConfig: any k, mode, scheme, T, and c1 / c2 within the feasible range."""
    mode = draw(st.sampled_from(["inside", "cross"]))
    k = draw(st.integers(3 if mode == "cross" else 2, 6))
    c1 = draw(st.floats(min(1.0, 1.0 / k + 0.08), 1.0))
    c2 = draw(st.floats(0.0, min(1.0, 2 * c1) * 0.8)) if mode == "cross" else 0.3
    return EncryptionConfig(k=k, mode=mode, scheme=draw(st.sampled_from(["instahide", "mixup"])),
                            T=draw(st.integers(1, 3)), c1=c1, c2=c2)


def _bank(cfg: EncryptionConfig, seed: int, shape) -> np.ndarray | None:
    """The public patch bank of a cross-dataset release (7 patches)."""
    if cfg.mode != "cross":
        return None
    return np.random.default_rng(seed + 1).uniform(-1, 1, (7, *shape)).astype(np.float32)


def _release(cfg: EncryptionConfig, private: np.ndarray, seed: int):
    """Encrypt; each private image has its own class, so a row's private classes are distinct."""
    n = len(private)
    labels = np.random.default_rng(seed).permutation(n)
    try:
        return encrypt(private, labels, n, cfg, seed=seed, public_patches=_bank(cfg, seed, private.shape[1:]))
    except HidebenchError:          # rejection sampling gave up on a barely feasible (c1, c2)
        reject()


# ----------------------------------------------------------------------------- metric

@SETTINGS
@given(images((2, 9, 11, 3)))
def test_ssim_of_an_image_with_itself_is_one(x):
    assert np.allclose(ssim(x, x), 1.0, atol=1e-9)


@SETTINGS
@given(images((3, 8, 8, 3)), images((3, 8, 8, 3)))
def test_ssim_is_symmetric_and_bounded(a, b):
    s = ssim(a, b)
    assert np.allclose(s, ssim(b, a), atol=1e-12)
    assert np.all(s >= -1 - 1e-9) and np.all(s <= 1 + 1e-9)


@SETTINGS
@given(images((1, 8, 8, 3)), st.integers(0, 2 ** 32 - 1), st.floats(1.0, 60.0))
def test_batched_ssim_equals_scikit_image_even_out_of_range(a, seed, scale):
    b = np.random.default_rng(seed).uniform(-1, 1, a.shape).astype(np.float32) * scale
    assert ssim(a, b)[0] == pytest.approx(ssim_skimage(a[0], b[0]), abs=1e-10)


@SETTINGS
@given(schemes(), st.integers(0, 2 ** 32 - 1), st.integers(6, 9))
def test_exact_decryption_scores_max_ssim_one_and_min_l2_zero(cfg, seed, n):
    private = smooth_images(np.random.default_rng(seed), n)
    assume(n >= cfg.n_private_slots)
    _, key = _release(cfg, private, seed)
    for slot in range(key.n_private_slots):        # any private image of the encryption counts
        m = challenge_metric(key.private[key.selection[:, slot]], key)
        assert m["Max_SSIM"] == pytest.approx(1.0, abs=1e-9)
        assert m["Min_L2"] == pytest.approx(0.0, abs=1e-12)
        assert m["Mean_L2"] <= 4 and -1 <= m["Mean_SSIM"] <= 1


@SETTINGS
@given(schemes(), st.integers(0, 2 ** 32 - 1), st.floats(1.0, 100.0))
def test_scaling_a_decryption_past_the_range_gains_nothing(cfg, seed, scale):
    rng = np.random.default_rng(seed)
    private = smooth_images(rng, 6)
    assume(6 >= cfg.n_private_slots)
    view, key = _release(cfg, private, seed)
    dec = (rng.uniform(-1, 1, view.encryptions.shape) * scale).astype(np.float32)
    clipped = np.clip(dec, -1, 1)
    scaled, ref = challenge_metric(dec, key), challenge_metric(clipped, key)
    assert scaled == pytest.approx(ref, abs=1e-12)     # every figure, the L2s included, sees the clipped image
    truth = key.private[key.private_of()]              # E x slots x H x W x C
    l2_clipped = np.stack([mse(clipped, truth[:, j]) for j in range(truth.shape[1])], 1)
    assert scaled["Min_L2"] <= l2_clipped.min(1).mean() + 1e-12
    assert 0 <= scaled["Min_L2"] <= scaled["Mean_L2"] <= 4


@SETTINGS
@given(st.integers(0, 2 ** 32 - 1))
def test_integer_decryptions_are_refused(seed):
    rng = np.random.default_rng(seed)
    private = smooth_images(rng, 4)
    view, key = _release(EncryptionConfig(k=4, mode="inside", T=1), private, seed)
    with pytest.raises(HidebenchError, match="float"):
        challenge_metric(rng.integers(-100, 100, view.encryptions.shape), key)


# ----------------------------------------------------------------------------- encryption

@SETTINGS
@given(schemes(), st.integers(0, 2 ** 32 - 1), st.data())
def test_encryption_invariants(cfg, seed, data):
    n = data.draw(st.integers(cfg.n_private_slots, cfg.n_private_slots + 3), label="n_private")
    private = data.draw(images((n, 4, 4, 3)), label="private images")
    view, key = _release(cfg, private, seed)
    lam, sel, E = key.lambdas, key.selection, len(view)
    slots = key.n_private_slots
    assert E == n * cfg.T and lam.shape == sel.shape == (E, cfg.k)
    # coefficients: sum to 1, none above c1, cross-dataset private pair at least c2
    assert np.allclose(lam.sum(1), 1.0, atol=1e-5)
    assert np.all(lam >= 0) and np.all(lam <= cfg.c1 + 1e-6)
    if cfg.mode == "cross":
        assert np.all(lam[:, 0] + lam[:, 1] >= cfg.c2 - 1e-6)
    # every private image gets T encryptions made for it (slot 0); a row's private images are distinct
    assert np.array_equal(np.bincount(sel[:, 0], minlength=n), np.full(n, cfg.T))
    assert all(len(set(row)) == slots for row in sel[:, :slots].tolist())
    # the mask: +-1 for InstaHide, all ones for Mixup
    assert np.all(np.abs(key.sign) == 1) and (cfg.scheme == "instahide" or np.all(key.sign == 1))
    assert np.all(np.abs(view.encryptions) <= 1 + 1e-6)
    # decrypting with the key reproduces the release exactly: sum_j lambda_j * image_j, times the sign
    bank = _bank(cfg, seed, private.shape[1:])
    acc = key.private[sel[:, 0]] * lam[:, 0, None, None, None]
    for j in range(1, cfg.k):
        img = key.private[sel[:, j]] if j < slots else bank[sel[:, j]]
        acc = acc + img * lam[:, j, None, None, None]
    if cfg.scheme == "instahide":
        acc = acc * key.sign
    assert acc.dtype == np.float32 and np.array_equal(acc, view.encryptions)
    # labels: private images have distinct classes here, so each row's nonzero entries are
    # exactly its private coefficients (in its private images' classes) and nothing else
    y = key.private_labels
    for e in range(E):
        row = view.labels[e]
        assert np.array_equal(np.flatnonzero(row), np.sort(y[sel[e, :slots]][lam[e, :slots] > 0]))
        assert np.array_equal(row[y[sel[e, :slots]]], lam[e, :slots])
