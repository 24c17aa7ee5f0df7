import numpy as np
import pytest
from helpers import random_images

from hidebench.metrics import challenge_metric, matched_set_metric, mse, psnr, ssim, ssim_skimage
from hidebench.types import HidebenchError


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = random_images(rng, 6)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    b[0] = a[0]                       # identical pair
    b[1] = -a[1]                      # negated image
    b[2] = rng.uniform(-1, 1, a[2].shape)
    return a, b


def test_batched_ssim_equals_scikit_image(pair):
    a, b = pair
    ours = ssim(a, b)
    ref = np.array([ssim_skimage(a[i], b[i]) for i in range(len(a))])
    assert np.allclose(ours, ref, atol=1e-10)
    assert ours[0] == pytest.approx(1.0)
    assert ours[1] < 0


def test_ssim_clips_out_of_range_decryptions(pair):
    a, _ = pair
    assert np.allclose(ssim(a * 5, a), ssim(np.clip(a * 5, -1, 1), a))


def test_psnr_and_mse_known_values():
    a = np.zeros((1, 32, 32, 3), dtype=np.float32)
    b = a + 0.2                        # 0.1 on the [0, 1] scale
    assert psnr(a, b)[0] == pytest.approx(20.0, abs=1e-4)
    assert mse(a, b)[0] == pytest.approx(0.04)


def test_challenge_metric_of_exact_recovery(tiny_cross):
    view, key, _, _ = tiny_cross
    exact = key.private[key.selection[:, 0]]
    m = challenge_metric(exact, key, per_encryption=True)
    assert m["Max_SSIM"] == pytest.approx(1.0) and m["Min_L2"] == pytest.approx(0.0)
    other = mse(exact, key.private[key.selection[:, 1]])
    assert m["Mean_L2"] == pytest.approx(0.5 * other.mean())
    assert m["ssim"].shape == (len(view), 2)
    swapped = challenge_metric(key.private[key.selection[:, 1]], key)
    assert swapped["Max_SSIM"] == pytest.approx(1.0)   # either private image counts


def test_challenge_metric_rejects_bad_decryptions(tiny_cross):
    view, key, _, _ = tiny_cross
    with pytest.raises(HidebenchError, match="shape"):
        challenge_metric(np.zeros((len(view) - 1, 32, 32, 3)), key)
    bad = np.zeros((len(view), 32, 32, 3))
    bad[3, 1, 1, 1] = np.inf
    with pytest.raises(HidebenchError, match="infinite"):
        challenge_metric(bad, key)


def test_matched_set_metric_finds_the_permutation():
    rng = np.random.default_rng(2)
    truth = random_images(rng, 8)
    perm = rng.permutation(8)
    m = matched_set_metric(truth[perm], truth)
    assert m["ssim"] == pytest.approx(1.0)
    assert np.array_equal(m["match"][:, 1], perm)
    noisy = matched_set_metric(np.clip(truth[perm] + rng.normal(0, 0.5, truth.shape), -1, 1), truth)
    assert 0 < noisy["ssim"] < 0.9 and np.array_equal(noisy["match"][:, 1], perm)


def test_large_sets_match_on_candidates_as_all_pairs_do(monkeypatch):
    """Beyond EXACT_PAIRS the matching scores each recovered image against its most correlated
    true images only; on a noisy permutation (and a recovered set larger than the truth) it
    finds the same matching and the same scores as all pairs."""
    import hidebench.metrics as metrics

    rng = np.random.default_rng(5)
    truth = random_images(rng, 40)
    perm = rng.permutation(40)
    rec = np.clip(truth[perm] + rng.normal(0, 0.4, truth.shape), -1, 1)
    rec = np.concatenate([rec, random_images(rng, 5)])
    exact = matched_set_metric(rec, truth)
    monkeypatch.setattr(metrics, "EXACT_PAIRS", 100)
    monkeypatch.setattr(metrics, "MATCH_CANDIDATES", 4)
    pruned = metrics.matched_set_metric(rec, truth)
    np.testing.assert_array_equal(pruned["match"], exact["match"])
    assert pruned["ssim"] == pytest.approx(exact["ssim"])


def test_ssim_in_batches_equals_one_batch(monkeypatch):
    import hidebench.metrics as metrics

    rng = np.random.default_rng(6)
    a, b = random_images(rng, 10), random_images(rng, 10)
    whole = ssim(a, b)
    monkeypatch.setattr(metrics, "SSIM_BATCH", 3)
    np.testing.assert_array_equal(metrics.ssim(a, b), whole)
    np.testing.assert_array_equal(metrics.ssim(a, b[:1]), ssim(a, b[:1]))
