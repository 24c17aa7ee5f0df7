import os
from pathlib import Path

import numpy as np
import pytest
from helpers import random_images

from hidebench.defenses.instahide import EncryptionConfig, encrypt


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory):
    """Trained attack models go to a folder of this test session, never the user's cache
    (subprocesses inherit it through the environment)."""
    old = os.environ.get("HIDEBENCH_MODELS")
    os.environ["HIDEBENCH_MODELS"] = str(tmp_path_factory.mktemp("models"))
    yield
    if old is None:
        os.environ.pop("HIDEBENCH_MODELS", None)
    else:
        os.environ["HIDEBENCH_MODELS"] = old


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread: the tests' tiny problems run several times slower when threads
    spin-wait on a shared 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root: skip when HIDEBENCH_DATA is unset, fail when it is set but the data is missing."""
    root = os.environ.get("HIDEBENCH_DATA")
    if not root:
        pytest.skip("HIDEBENCH_DATA is not set")
    p = Path(root)
    missing = [d for d in ("cifar10/test", "cifar10/train", "tiny-imagenet-val/images") if not (p / d).is_dir()]
    if missing:
        pytest.fail(f"HIDEBENCH_DATA={root} is set but lacks {missing}")
    return p


@pytest.fixture
def tiny_cross():
    """A small cross-dataset InstaHide release with its patch bank."""
    rng = np.random.default_rng(0)
    priv = random_images(rng, 12)
    labels = rng.integers(0, 4, size=12)
    bank = random_images(rng, 200, smooth=False)
    cfg = EncryptionConfig(k=6, mode="cross", T=5)
    view, key = encrypt(priv, labels, 4, cfg, seed=11, public_patches=bank)
    return view, key, bank, cfg
