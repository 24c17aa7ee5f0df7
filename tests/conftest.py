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


@pytest.fixture(autouse=True, scope="session")
def _private_representation_cache(tmp_path_factory):
    """Sentence representations go to a cache of this test session, never the user's (subprocesses
    inherit it through the environment); the session's TextHide tests encode their few hundred
    sentences once."""
    old = os.environ.get("HIDEBENCH_REPRESENTATIONS")
    os.environ["HIDEBENCH_REPRESENTATIONS"] = str(tmp_path_factory.mktemp("representations"))
    yield
    if old is None:
        os.environ.pop("HIDEBENCH_REPRESENTATIONS", None)
    else:
        os.environ["HIDEBENCH_REPRESENTATIONS"] = old


# Every 40th Rotten Tomatoes sentence (214, both classes): the TextHide tests' corpus, encoded once a session.
TEXT_SLICE = "text:rotten_tomatoes[::40]"


@pytest.fixture(scope="session")
def text_corpus():
    """(TextSet, N x 384 representations) of TEXT_SLICE."""
    from hidebench.text.corpus import load_text_source
    from hidebench.text.encoder import EncoderConfig, encode

    texts = load_text_source(TEXT_SLICE)
    return texts, encode(texts.texts, EncoderConfig())


@pytest.fixture(scope="session")
def text_release(tmp_path_factory, text_corpus):
    """A small generated TextHide release: 40 private sentences of TEXT_SLICE, T=6, k=2, m=4; the
    attacker's candidates are TEXT_SLICE (the 40 among 174 others)."""
    from hidebench.defenses.texthide_challenge import generate_text_to_dir
    from hidebench.text.recipe import load_text_recipe

    d = tmp_path_factory.mktemp("text") / "release"
    recipe = load_text_recipe("texthide-rt", {"private_source": TEXT_SLICE, "n_priv": 40, "T": 6, "k": 2, "m": 4,
                                              "candidates": TEXT_SLICE})
    generate_text_to_dir(recipe, d, seed=11, progress=False)
    return d


@pytest.fixture(scope="session")
def benchmark_script():
    """Load a script of benchmarks/ (not a package) as a module: benchmark_script("bench_utility")."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
