"""Small shared test helpers (tests/ is on sys.path under pytest's default import mode)."""
import numpy as np


def random_images(rng, n, smooth=True):
    """Images in [-1, 1]; smooth ones look more like photos than white noise does."""
    if not smooth:
        return rng.uniform(-1, 1, size=(n, 32, 32, 3)).astype(np.float32)
    x = rng.uniform(-1, 1, size=(n, 8, 8, 3))
    x = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    return x.astype(np.float32)
