"""The augmentation of the InstaHide authors' training code: a random crop of the image padded
by 4 black pixels on each side, then a random horizontal flip (torchvision's
RandomCrop(32, padding=4) and RandomHorizontalFlip, as in `train_inside.py` / `train_cross.py`
of Huang et al. 2020), vectorised over a batch of HWC images in [-1, 1]."""
from __future__ import annotations

import numpy as np

PAD = 4
PAD_VALUE = -1.0          # black: torchvision pads the [0, 1] image with zeros before normalising


def crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = PAD,
              flips: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each image shifted by (dy, dx) in [-pad, pad] (what a crop of the padded image is) and
    flipped left-right with probability 1/2 (or where `flips`, one 0/1 per image, says so);
    returns the images and the N x 3 parameters (dy, dx, flip) that made them."""
    n = len(images)
    params = np.stack([rng.integers(-pad, pad + 1, size=n), rng.integers(-pad, pad + 1, size=n),
                       rng.integers(0, 2, size=n) if flips is None else np.asarray(flips, dtype=np.int64)], axis=1)
    return shift_flip(images, params), params


def shift_flip(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply N x 3 parameters (dy, dx, flip): flip left-right where flip is 1, then
    out[y, x] = image[y + dy, x + dx], PAD_VALUE outside the image."""
    x = np.asarray(images)
    h, w = x.shape[1:3]
    dy, dx, flip = (np.asarray(params)[:, i].astype(np.int64) for i in range(3))
    out = np.full_like(x, PAD_VALUE)
    src = np.where(flip.astype(bool)[:, None, None, None], x[:, :, ::-1], x)
    for a, b in {(int(a), int(b)) for a, b in zip(dy, dx)}:
        idx = np.flatnonzero((dy == a) & (dx == b))
        out[idx, max(0, -a): h - max(0, a), max(0, -b): w - max(0, b)] = \
            src[idx, max(0, a): h - max(0, -a), max(0, b): w - max(0, -b)]
    return out
