"""The InstaHide Challenge metric and image-quality metrics.

SSIM is scikit-image's `structural_similarity` (the challenge's official choice) on HWC images
mapped from [-1, 1] to [0, 1], data_range=1, channel_axis=-1, default 7x7 uniform window.
`ssim` below is a batched re-implementation of exactly that computation (tests check it
against scikit-image); use `ssim_skimage` for the reference itself.

L2: the challenge never defined its L2_diff. Its published figures (an exact recovery scores
Min_L2 0.00 and Mean_L2 0.27) fit the mean squared difference on the released [-1, 1] scale,
which is what `mse` computes.

Decryptions (and recovered images) must be float arrays; they are clipped to [-1, 1] before
every figure, the L2s included, so scaling a decryption beyond the image range gains nothing.
An integer array is refused: it is almost always a uint8 image or a label map, not a
decryption on the [-1, 1] scale.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.optimize import linear_sum_assignment

from hidebench.types import HidebenchError, SecretKey, check_images

_WIN, _K1, _K2 = 7, 0.01, 0.03
SSIM_BATCH = 4096


def _unit(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 1] in float64, clipped (a decryption may stray out of range)."""
    return np.clip((np.asarray(x, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of [-1, 1] NHWC images (broadcast over N), as scikit-image computes it."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    if a.ndim == 3:
        return ssim(a[None], b[None])[0]
    if len(a) > SSIM_BATCH:               # bounded temporaries: about a dozen float64 copies of a batch
        return np.concatenate([ssim(a[i: i + SSIM_BATCH], b[i: i + SSIM_BATCH]) for i in range(0, len(a), SSIM_BATCH)])
    x, y = _unit(a), _unit(b)
    size = (1, _WIN, _WIN, 1)
    npix = _WIN * _WIN
    cov_norm = npix / (npix - 1)
    ux, uy = uniform_filter(x, size), uniform_filter(y, size)
    uxx, uyy, uxy = uniform_filter(x * x, size), uniform_filter(y * y, size), uniform_filter(x * y, size)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = _K1 ** 2, _K2 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (_WIN - 1) // 2
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))


def ssim_skimage(a: np.ndarray, b: np.ndarray) -> float:
    """The official per-image SSIM: scikit-image on one HWC pair in [-1, 1]."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_unit(a), _unit(b), data_range=1.0, channel_axis=-1))


def _candidate_ssim(r: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """m x n: SSIM of each recovered image with its k most correlated true images, -2 elsewhere."""
    def unit_rows(x):
        x = x.reshape(len(x), -1).astype(np.float64)
        x = x - x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    k = min(k, len(t))
    cand = np.argpartition(-(unit_rows(r) @ unit_rows(t).T), k - 1, axis=1)[:, :k]
    sim = np.full((len(r), len(t)), -2.0)
    for j in range(k):
        sim[np.arange(len(r)), cand[:, j]] = ssim(r, t[cand[:, j]])
    return sim


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared difference per image on the [-1, 1] scale (the challenge's L2)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return (d * d).reshape(d.shape[0], -1).mean(axis=1) if d.ndim == 4 else float((d * d).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB per image, on the [0, 1] scale (data_range 1)."""
    x, y = _unit(a), _unit(b)
    m = ((x - y) ** 2).reshape(x.shape[0], -1).mean(axis=1)
    return 10 * np.log10(1.0 / np.maximum(m, 1e-12))


def _check_float(name: str, x) -> np.ndarray:
    x = check_images(name, x)
    if not np.issubdtype(x.dtype, np.floating):
        raise HidebenchError(f"{name}: expected a float array on the [-1, 1] scale, got dtype {x.dtype} "
                             "(convert uint8 images with x / 127.5 - 1)")
    return x


def check_decryption(decryption: np.ndarray, n_encryptions: int) -> np.ndarray:
    """A float E x 32 x 32 x 3 decryption without NaNs or infinities, clipped to [-1, 1]."""
    d = _check_float("decryption", decryption)
    if d.shape[0] != n_encryptions or d.shape[1:] != (32, 32, 3):
        raise HidebenchError(f"decryption has shape {d.shape}; the challenge needs ({n_encryptions}, 32, 32, 3)")
    return np.clip(d, -1.0, 1.0)


def challenge_metric(decryption: np.ndarray, key: SecretKey, *, per_encryption: bool = False) -> dict:
    """Max_SSIM (ranking), Mean_SSIM, Min_L2, Mean_L2: per encryption against its private images
    (the two of a cross-dataset release, all k inside-dataset), then averaged over encryptions."""
    d = check_decryption(decryption, len(key.selection))
    priv = key.private_of()
    s = np.stack([ssim(d, key.private[priv[:, j]]) for j in range(priv.shape[1])], axis=1)
    l2 = np.stack([mse(d, key.private[priv[:, j]]) for j in range(priv.shape[1])], axis=1)
    out = {"Max_SSIM": float(s.max(1).mean()), "Mean_SSIM": float(s.mean(1).mean()),
           "Min_L2": float(l2.min(1).mean()), "Mean_L2": float(l2.mean(1).mean())}
    if per_encryption:
        out["ssim"], out["l2"] = s, l2
    return out


# matched_set_metric scores every (recovered, true) pair up to this many pairs; beyond it, each
# recovered image only against its MATCH_CANDIDATES most correlated true images.
EXACT_PAIRS = 250_000
MATCH_CANDIDATES = 20


def matched_set_metric(recovered: np.ndarray, truth: np.ndarray) -> dict:
    """Match recovered images to true ones (Hungarian method on SSIM) and score the matches.

    Returns mean SSIM / PSNR / MSE over matched pairs, the match (recovered -> truth index)
    and per-match SSIM. Works for unequal set sizes (only min(m, n) pairs are matched).
    Sets of more than EXACT_PAIRS pairs (500 x 500): SSIM is computed for each recovered
    image's MATCH_CANDIDATES most correlated true images only (Pearson over the pixels, one
    matrix product), the other pairs enter the matching at -2 (below any SSIM), and the
    matched pairs are then scored exactly; so the matching costs O(m k) SSIMs, not O(m n).
    """
    r = np.clip(_check_float("recovered images", recovered), -1.0, 1.0)
    t = check_images("true images", truth)
    if not len(r) or not len(t):
        raise HidebenchError(f"recovered images ({len(r)}) and true images ({len(t)}) must both be non-empty")
    if r.shape[1:] != t.shape[1:]:
        raise HidebenchError(f"recovered images have shape {r.shape}; they must be N x {' x '.join(map(str, t.shape[1:]))}")
    if len(r) * len(t) <= EXACT_PAIRS:
        sim = np.stack([ssim(r, t[j][None]) for j in range(len(t))], axis=1)  # m x n
    else:
        sim = _candidate_ssim(r, t, MATCH_CANDIDATES)
    rows, cols = linear_sum_assignment(-sim)
    matched_ssim = ssim(r[rows], t[cols])
    return {"ssim": float(matched_ssim.mean()), "psnr": float(psnr(r[rows], t[cols]).mean()),
            "mse": float(mse(r[rows], t[cols]).mean()), "match": np.stack([rows, cols], 1),
            "per_image_ssim": matched_ssim}
