import numpy as np
import pytest
from PIL import Image

from hidebench.data import PoolConfig, build_pool, load_source, source_size
from hidebench.types import HidebenchError


def test_lfw_is_embedded_and_in_range(monkeypatch):
    monkeypatch.delenv("HIDEBENCH_DATA", raising=False)
    s = load_source("lfw")
    assert s.images.shape == (200, 32, 32, 3) and s.images.dtype == np.float32
    assert s.images.min() >= -1 and s.images.max() <= 1 and s.images.std() > 0.2
    assert s.classes == ["face", "non-face"] and np.bincount(s.labels).tolist() == [100, 100]
    assert np.array_equal(s.images[..., 0], s.images[..., 2])     # grey replicated to 3 channels


def test_slices_select_disjoint_halves():
    a, b = load_source("lfw[0::2]"), load_source("lfw[1::2]")
    full = load_source("lfw")
    assert len(a) == len(b) == 100 == source_size("lfw[1::2]")
    assert np.array_equal(a.images, full.images[0::2]) and np.array_equal(b.images, full.images[1::2])
    with pytest.raises(HidebenchError, match="bad slice"):
        load_source("lfw[a:b]")


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", x=u8, y=np.array([0, 1, 2, 1, 0]))
    s = load_source(f"npz:{tmp_path / 'u.npz'}")
    assert np.allclose(s.images, u8 / 127.5 - 1, atol=1e-6) and len(s.classes) == 3
    np.savez(tmp_path / "f.npz", x=u8 / 255.0, y=np.zeros(5, int))
    assert np.allclose(load_source(f"npz:{tmp_path / 'f.npz'}").images, s.images, atol=1e-6)
    np.savez(tmp_path / "bad.npz", images=u8)
    with pytest.raises(HidebenchError, match="'x' and 'y'"):
        load_source(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(HidebenchError, match="does not exist"):
        load_source(f"npz:{tmp_path / 'none.npz'}")


def test_imagefolder_source_resizes_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    for name in ["cats", "dogs"]:
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    s = load_source(f"imagefolder:{tmp_path}")
    assert s.images.shape == (6, 32, 32, 3) and s.classes == ["cats", "dogs"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_missing_data_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HIDEBENCH_DATA", raising=False)
    with pytest.raises(HidebenchError, match="HIDEBENCH_DATA"):
        load_source("cifar10:test")
    with pytest.raises(HidebenchError, match=r"looked for .*cifar-10-batches-py.*cifar10/test"):
        load_source("cifar10:test", data_root=tmp_path)
    with pytest.raises(HidebenchError, match="unknown data source"):
        load_source("mnist")
    with pytest.raises(HidebenchError, match="Tiny-ImageNet"):
        build_pool(PoolConfig(source="tinyimagenet"), np.random.default_rng(0), data_root=tmp_path, progress=False)


def test_photos_pool_filters_with_sift():
    rng = np.random.default_rng(0)
    pool = build_pool(PoolConfig(source="photos", region=96, screen=40, min_keypoints=20, patch_mode="resize"), rng,
                      progress=False)
    assert 0 < pool.acceptance_rate < 1 and len(pool.keypoints) == 40
    assert pool.regions.shape[1:] == (96, 96, 3)
    patches, origin = pool.patches(rng, 7)
    assert patches.shape == (7, 32, 32, 3) and np.abs(patches).max() <= 1 and origin.shape == (7, 3)
    strict = build_pool(PoolConfig(source="photos", region=96, screen=40, min_keypoints=60, patch_mode="resize"),
                        np.random.default_rng(0), progress=False)
    assert strict.acceptance_rate < pool.acceptance_rate
    with pytest.raises(HidebenchError, match="no region"):
        build_pool(PoolConfig(source="photos", region=96, screen=5, min_keypoints=10_000), rng, progress=False)


def test_cifar10_from_data_root(data_root):
    s = load_source("cifar10:test", data_root=data_root, indices=np.arange(0, 10000, 500))
    assert s.images.shape == (20, 32, 32, 3) and s.classes[0] == "airplane" and len(s.classes) == 10
    assert np.array_equal(s.labels, np.repeat(np.arange(10), 2))
    assert source_size("cifar10:train", data_root=data_root) == 50000


def test_tinyimagenet_pool_crops(data_root):
    pool = build_pool(PoolConfig(source="tinyimagenet", screen=60), np.random.default_rng(0), data_root=data_root,
                      progress=False)
    assert pool.regions.shape[1:] == (64, 64, 3) and 0.2 < pool.acceptance_rate < 0.95
    patches, origin = pool.patches(np.random.default_rng(1), 50)
    assert patches.shape == (50, 32, 32, 3) and origin[:, 1:].max() <= 32
    r, t, l_ = origin[0]
    assert np.allclose(patches[0], pool.regions[r, t:t + 32, l_:l_ + 32] / 127.5 - 1, atol=1e-6)
