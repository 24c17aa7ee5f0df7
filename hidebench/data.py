"""Data sources (private sets) and public pools, all yielding float32 HWC in [-1, 1].

Sources: `cifar10:train|test`, `imagefolder:PATH`, `npz:PATH`, and `lfw` (embedded in
scikit-image, needs no data root). Pools for cross-dataset mixing: `tinyimagenet`,
`imagefolder:PATH`, and `photos` (scikit-image's bundled colour photographs).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hidebench.config import Config
from hidebench.resources import check_memory
from hidebench.types import IMAGE_SHAPE, HidebenchError, ImageSet

DATA_ENV = "HIDEBENCH_DATA"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# scikit-image's bundled colour photographs (loaded without a network).
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket", "retina",
               "stereo_motorcycle")


def resolve_data_root(data_root: str | os.PathLike | None = None, *, required_for: str = "") -> Path:
    """The data root from the argument or $HIDEBENCH_DATA; a clear error if neither is set."""
    root = data_root or os.environ.get(DATA_ENV)
    if not root:
        raise HidebenchError(
            f"{required_for or 'this data source'} needs a data root: pass --data-root DIR or set {DATA_ENV}=DIR "
            "(the embedded 'lfw' source and 'photos' pool need none)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HidebenchError(f"data root {root} does not exist (from --data-root or {DATA_ENV})")
    return root


def to_unit_range(u8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return (np.asarray(u8, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def to_rgb32(img: np.ndarray, size: int = IMAGE_SHAPE[0]) -> np.ndarray:
    """Any HxW or HxWxC image (uint8 or float in [0, 1]) -> size x size x 3 float in [0, 1]."""
    from skimage.transform import resize

    a = np.asarray(img)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    if a.ndim == 2:
        a = a[..., None]
    a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[:2] != (size, size):
        a = resize(a, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(a, 0.0, 1.0)


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def list_image_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files of an ImageFolder tree (class subfolders, sorted by name) with their labels."""
    if not root.is_dir():
        raise HidebenchError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for c, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += found
        labels += [c] * len(found)
    if not files:
        raise HidebenchError(f"image folder {root} holds no images in class subfolders")
    return files, np.asarray(labels, dtype=np.int64), classes


def _load_files(files: list[Path], progress: bool = False) -> np.ndarray:
    from hidebench.progress import bar

    if not files:
        raise HidebenchError("no images selected")
    it = bar(files, enabled=progress and len(files) >= 2000, desc="loading images", leave=False)
    out = []
    for f in it:
        try:
            out.append(to_unit_range(np.round(to_rgb32(_read_image(f)) * 255)))
        except (OSError, ValueError, SyntaxError) as e:   # PIL: unreadable or truncated image
            raise HidebenchError(f"cannot read image {f}: {e}") from e
    return np.stack(out)


def _cifar10(split: str, data_root, download: bool, indices, progress: bool = False) -> ImageSet:
    if split not in ("train", "test"):
        raise HidebenchError(f"cifar10 split must be 'train' or 'test', got {split!r}")
    root = resolve_data_root(data_root, required_for="cifar10")
    batches = root / "cifar-10-batches-py"
    folder = root / "cifar10" / split
    if download and not batches.is_dir() and not folder.is_dir():
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    if batches.is_dir():
        x, y, classes = read_cifar10_batches(batches, split)
        n = len(x)
        if indices is not None:
            idx = check_indices(indices, len(x), f"cifar10:{split}")
            x, y = x[idx], y[idx]
        return ImageSet(to_unit_range(x), y, classes, f"cifar10:{split}", _fingerprint("cifar-10-batches-py", split, n))
    if folder.is_dir():
        files, labels, classes = list_image_folder(folder)
        if indices is not None:
            idx = check_indices(indices, len(files), f"cifar10:{split}")
            files, labels = [files[i] for i in idx], labels[idx]
        return ImageSet(_load_files(files, progress=progress), labels, classes, f"cifar10:{split}",
                        _fingerprint("cifar10-imagefolder", split, len(labels)))
    raise HidebenchError(
        f"CIFAR-10 not found: looked for {batches} (torchvision format) and {folder} (ImageFolder tree). "
        f"Provide either under the data root, or let torchvision download it ('challenge generate --download').")


CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_cifar10_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The official `cifar-10-batches-py` files (Python pickles) read without running any code
    they might hold: only dicts, lists, strings, numbers and numpy arrays are unpickled, and the
    contents are checked (N x 3072 uint8 pixels, N labels in 0..9). Images N x 32 x 32 x 3."""
    xs, ys = [], []
    for name in CIFAR10_BATCHES[split]:
        d = _safe_unpickle(folder / name)
        data, labels = d.get(b"data", d.get("data")), d.get(b"labels", d.get("labels"))
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
                and isinstance(labels, list) and len(labels) == len(data)
                and all(isinstance(v, int) and 0 <= v < 10 for v in labels)):
            raise HidebenchError(f"{folder / name} is not a CIFAR-10 batch (expected 'data' N x 3072 uint8 and N "
                                 "'labels' in 0..9)")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(labels, dtype=np.int64))
    meta = _safe_unpickle(folder / "batches.meta")
    classes = meta.get(b"label_names", meta.get("label_names"))
    if not (isinstance(classes, list) and len(classes) == 10):
        raise HidebenchError(f"{folder / 'batches.meta'} does not name the 10 CIFAR-10 classes")
    classes = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in classes]
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), classes


def _safe_unpickle(path: Path) -> dict:
    """A pickled dict of plain data and numpy arrays; any other class in the pickle (the way a
    pickle runs code) is refused with one error line."""
    import pickle

    class DataOnly(pickle.Unpickler):
        allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

        def find_class(self, module, name):
            if (module, name) not in self.allowed:
                raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data file never needs")
            return super().find_class(module, name)

    if not path.is_file():
        raise HidebenchError(f"CIFAR-10 batch {path} is missing")
    try:
        with open(path, "rb") as f:
            d = DataOnly(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001  (a damaged pickle raises many kinds)
        raise HidebenchError(f"{path} is not a readable CIFAR-10 batch ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(d, dict):
        raise HidebenchError(f"{path} is not a CIFAR-10 batch (no dict inside)")
    return d


def _lfw(indices) -> ImageSet:
    from skimage.data import lfw_subset

    faces = lfw_subset()  # 100 faces then 100 non-faces, 25 x 25 grey in [0, 1]
    labels = np.repeat([0, 1], 100)
    if indices is not None:
        faces, labels = faces[indices], labels[indices]
    x = np.stack([to_unit_range(np.round(to_rgb32(f) * 255)) for f in faces])
    return ImageSet(x, labels, ["face", "non-face"], "lfw", _fingerprint("skimage.lfw_subset"))


def _npz(path: str, indices) -> ImageSet:
    import pickle
    import zipfile

    p = Path(path).expanduser()
    if not p.is_file():
        raise HidebenchError(f"npz source {p} does not exist")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" and magic != b"PK\x05\x06":
        kind = "a single .npy array" if magic == b"\x93NUM" else "not a zip file"
        raise HidebenchError(f"npz source {p} is {kind}; expected an .npz archive (numpy.savez) holding 'x' and 'y'")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise HidebenchError(f"npz source {p} is not a readable .npz archive: {e}") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise HidebenchError(f"npz source {p} is a single .npy array, not an .npz archive holding 'x' and 'y'")
    with z:
        if "x" not in z or "y" not in z:
            raise HidebenchError(f"npz source {p} must hold arrays 'x' and 'y', found {sorted(z.files)}")
        try:
            x, y = z["x"], z["y"]
            classes = z.get("classes")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise HidebenchError(f"npz source {p}: cannot read its arrays: {e}") from e
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise HidebenchError(f"npz 'x' must be N x H x W or N x H x W x C (C = 1, 3 or 4), got shape {x.shape}")
    if not len(x) or min(x.shape[1:3]) < 1:
        raise HidebenchError(f"npz 'x' holds no images (shape {x.shape})")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise HidebenchError(f"npz 'x' must hold uint8 or real float images, got dtype {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise HidebenchError(f"npz 'y' must be a vector of {len(x)} labels (one per image in 'x'), got shape {y.shape}")
    integral = (np.issubdtype(y.dtype, np.integer) or
                (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))))
    if y.dtype == np.bool_ or not integral:
        raise HidebenchError(f"npz 'y' must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise HidebenchError(f"npz 'y' must hold labels >= 0, found {int(y.min())}")
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1)]
    else:
        if classes.ndim != 1:
            raise HidebenchError(f"npz 'classes' must be a vector of class names, got shape {classes.shape}")
        classes = [str(c) for c in classes]
        if int(y.max()) >= len(classes):
            raise HidebenchError(f"npz 'y' has label {int(y.max())} but 'classes' names only {len(classes)} classes")
    if indices is not None:
        idx = check_indices(indices, len(x), f"npz:{p}")
        x, y = x[idx], y[idx]
    if x.dtype == np.uint8:
        u = x
    else:
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise HidebenchError(f"npz 'x' contains {int(np.sum(~np.isfinite(x)))} NaN or infinite values")
        if x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
            raise HidebenchError(f"npz float 'x' must lie in [-1, 1] or [0, 1], found [{x.min():.3g}, {x.max():.3g}]")
        u = np.round(np.clip((x + 1) / 2 if x.min() < 0 else x, 0, 1) * 255).astype(np.uint8)
    imgs = np.stack([to_unit_range(np.round(to_rgb32(i) * 255)) for i in u])
    return ImageSet(imgs, y, classes, f"npz:{p}", _fingerprint("npz", hashlib.sha256(p.read_bytes()).hexdigest()))


def check_indices(indices, n: int, spec: str) -> np.ndarray:
    """indices as an int array, all in [0, n); a clear error otherwise."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise HidebenchError(f"{spec}: image indices must be a vector of integers, got {idx.dtype} of shape {idx.shape}")
    if not idx.size:
        raise HidebenchError(f"{spec}: no images selected")
    if idx.min() < 0 or idx.max() >= n:
        raise HidebenchError(f"{spec}: image index {int(idx.max() if idx.max() >= n else idx.min())} is outside "
                             f"0..{n - 1}")
    return idx.astype(np.int64)


def split_slice(spec: str) -> tuple[str, slice | None]:
    """'lfw[0::2]' -> ('lfw', slice(0, None, 2)); a spec without brackets -> (spec, None)."""
    if not spec.endswith("]") or "[" not in spec:
        return spec, None
    base, _, sl = spec[:-1].rpartition("[")
    try:
        parts = [int(p) if p.strip() else None for p in sl.split(":")]
        if not 1 <= len(parts) <= 3 or (len(parts) == 1 and parts[0] is None):
            raise ValueError
    except ValueError:
        raise HidebenchError(f"bad slice in data source {spec!r}: use e.g. lfw[0::2] or cifar10:train[:5000]") from None
    if len(parts) == 3 and parts[2] == 0:
        raise HidebenchError(f"bad slice in data source {spec!r}: the step must not be zero")
    if not base:
        raise HidebenchError(f"bad data source {spec!r}: a slice needs a source before it, e.g. lfw[0::2]")
    if len(parts) == 1:   # one index: that image alone (-1: the last one)
        return base, slice(parts[0], parts[0] + 1 if parts[0] != -1 else None)
    return base, slice(*parts)


def load_source(spec: str, *, data_root=None, download: bool = False, indices=None, progress: bool = False) -> ImageSet:
    """Load a private/auxiliary image set by spec, e.g. 'lfw', 'cifar10:test', 'imagefolder:/data/x'.

    A trailing Python slice selects part of a source: 'lfw[0::2]', 'cifar10:train[:5000]'.
    indices, if given, selects images (within the sliced source) before decoding.
    progress: show a bar while decoding many image files (only on a terminal).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise HidebenchError(f"data source must be a non-empty string, got {spec!r}")
    base, sl = split_slice(spec)
    if sl is not None:
        allowed = np.arange(source_size(base, data_root=data_root, download=download))[sl]
        if not len(allowed):
            raise HidebenchError(f"data source {spec!r} selects no images")
        idx = allowed if indices is None else allowed[check_indices(indices, len(allowed), spec)]
        out = load_source(base, data_root=data_root, download=download, indices=idx, progress=progress)
        out.source, out.fingerprint = spec, _fingerprint(out.fingerprint, spec)
        return out
    kind, _, arg = spec.partition(":")
    if kind == "lfw" and not arg:
        return _lfw(None if indices is None else check_indices(indices, 200, spec))
    if kind == "cifar10":
        return _cifar10(arg or "test", data_root, download, indices, progress)
    if kind == "imagefolder" and arg:
        files, labels, classes = list_image_folder(Path(arg).expanduser())
        if indices is not None:
            idx = check_indices(indices, len(files), spec)
            files, labels = [files[i] for i in idx], labels[idx]
        return ImageSet(_load_files(files, progress=progress), labels, classes, spec, _fingerprint(spec, len(files)))
    if kind == "npz" and arg:
        return _npz(arg, indices)
    raise HidebenchError(f"unknown data source {spec!r}: use lfw, cifar10:train, cifar10:test, imagefolder:PATH or npz:PATH")


def source_size(spec: str, *, data_root=None, download: bool = False) -> int:
    """Number of images in a source without decoding them (ImageFolder trees are only listed)."""
    base, sl = split_slice(spec)
    if sl is not None:
        return len(range(source_size(base, data_root=data_root, download=download))[sl])
    kind, _, arg = spec.partition(":")
    if kind == "lfw" and not arg:
        return 200
    if kind == "cifar10":
        if arg not in ("", "train", "test"):
            raise HidebenchError(f"cifar10 split must be 'train' or 'test', got {arg!r}")
        root = resolve_data_root(data_root, required_for="cifar10")
        folder = root / "cifar10" / (arg or "test")
        if folder.is_dir() and not (root / "cifar-10-batches-py").is_dir():
            return len(list_image_folder(folder)[0])
    if kind == "imagefolder" and arg:
        return len(list_image_folder(Path(arg).expanduser())[0])
    return len(load_source(spec, data_root=data_root, download=download))


# ----------------------------------------------------------------------------- public pools

@dataclass
class PoolConfig(Config):
    """How public patches are made: screen a region at source resolution with SIFT, keep it if
    it has >= min_keypoints keypoints, then take a random crop (or a resize) down to 32x32.

    region: side of the screened region (0 = the whole source image); screen: how many
    candidate regions to screen; patch_mode: 'crop' or 'resize'.
    """

    section = "pool"
    source: str = "tinyimagenet"
    min_keypoints: int = 40
    region: int = 0
    screen: int = 2000
    patch_mode: str = "crop"

    def validate(self):
        if self.patch_mode not in ("crop", "resize"):
            raise HidebenchError(f"pool.patch_mode must be 'crop' or 'resize', got {self.patch_mode!r}")
        for name, low in (("min_keypoints", 0), ("screen", 1), ("region", 0)):
            if getattr(self, name) < low:
                raise HidebenchError(f"pool.{name} must be an integer >= {low}, got {getattr(self, name)!r}")


@dataclass
class PublicPool:
    """Accepted regions (uint8 HWC, all the same size) and the screening statistics; `screens`:
    how many times the recipe's screen size was screened (an attacker's larger draw)."""

    regions: np.ndarray
    screened: int
    keypoints: np.ndarray   # keypoint count of every screened region
    fingerprint: str
    patch_mode: str
    screens: int = 1

    @property
    def acceptance_rate(self) -> float:
        return len(self.regions) / max(self.screened, 1)

    def subset(self, rng: np.random.Generator, n: int) -> PublicPool:
        """n of the accepted regions, drawn without replacement (all of them when n >= their number)."""
        if n >= len(self.regions):
            return self
        keep = np.sort(rng.choice(len(self.regions), size=n, replace=False))
        return replace(self, regions=self.regions[keep], screens=1)

    def patches(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n public 32x32x3 patches in [-1, 1] and their origin (region, top, left)."""
        s = IMAGE_SHAPE[0]
        h, w = self.regions.shape[1:3]
        src = rng.integers(0, len(self.regions), size=n)
        if self.patch_mode == "crop" and (h > s or w > s):
            top, left = rng.integers(0, h - s + 1, size=n), rng.integers(0, w - s + 1, size=n)
            idx = (src[:, None, None],
                   top[:, None, None] + np.arange(s)[None, :, None],
                   left[:, None, None] + np.arange(s)[None, None, :])
            out = to_unit_range(self.regions[idx])
        else:
            top = left = np.zeros(n, dtype=np.int64)
            small = np.stack([to_unit_range(np.round(to_rgb32(r) * 255)) for r in self.regions])
            out = small[src]
        return out, np.stack([src, top, left], axis=1)


def count_sift_keypoints(region_u8: np.ndarray) -> int:
    """SIFT keypoints (scikit-image) on the grey version of a uint8 RGB region."""
    from skimage.color import rgb2gray
    from skimage.feature import SIFT

    sift = SIFT()
    try:
        sift.detect(rgb2gray(region_u8))
    except RuntimeError:  # raised when no keypoints survive
        return 0
    return len(sift.keypoints)


def _pool_images(source: str, data_root) -> tuple[list, str]:
    """Source images of a pool as a list of callables/arrays, and a fingerprint."""
    kind, _, arg = source.partition(":")
    if kind == "photos" and not arg:
        import skimage.data

        imgs = []
        for name in PHOTO_NAMES:
            try:
                a = getattr(skimage.data, name)()
            except Exception:  # a photo scikit-image would have to download
                continue
            a = a[0] if isinstance(a, tuple) else a
            imgs.append(np.asarray(a)[..., :3])
        return imgs, _fingerprint("skimage-photos", [i.shape for i in imgs])
    if kind == "tinyimagenet" and not arg:
        folder = resolve_data_root(data_root, required_for="the tinyimagenet pool") / "tiny-imagenet-val" / "images"
        if not folder.is_dir():
            raise HidebenchError(f"Tiny-ImageNet validation images not found in {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        return files, _fingerprint("tiny-imagenet-val", len(files))
    if kind == "imagefolder" and arg:
        files = list_image_folder(Path(arg).expanduser())[0]
        return files, _fingerprint(source, len(files))
    raise HidebenchError(f"unknown public pool {source!r}: use tinyimagenet, photos or imagefolder:PATH")


def build_pool(cfg: PoolConfig, rng: np.random.Generator, *, data_root=None, progress: bool = True,
               screens: int = 1) -> PublicPool:
    """Screen cfg.screen random regions of the pool's images (`screens` times as many: an
    attacker's larger draw, capped at the source's size for whole-image pools) and keep the
    textured ones."""
    from hidebench.progress import bar

    images, fp = _pool_images(cfg.source, data_root)
    if not len(images):
        raise HidebenchError(f"public pool {cfg.source} holds no images")
    n_screen = cfg.screen * screens
    check_memory(n_screen * (8 + cfg.region ** 2 * 3), f"screening {n_screen:,} regions of pool {cfg.source}")
    order = rng.permutation(len(images))[:n_screen] if cfg.region == 0 else rng.integers(0, len(images), size=n_screen)
    kept, counts, size = [], [], None
    for i in bar(order, enabled=progress, desc=f"SIFT-screening {cfg.source}", leave=False):
        img = images[i]
        if isinstance(img, Path):
            try:
                img = _read_image(img)
            except (OSError, ValueError, SyntaxError) as e:
                raise HidebenchError(f"cannot read pool image {img}: {e}") from e
        if cfg.region:
            if min(img.shape[:2]) < cfg.region:
                raise HidebenchError(f"pool image of shape {img.shape[:2]} smaller than region {cfg.region}")
            t = rng.integers(0, img.shape[0] - cfg.region + 1)
            l_ = rng.integers(0, img.shape[1] - cfg.region + 1)
            img = img[t: t + cfg.region, l_: l_ + cfg.region]
        size = size or img.shape[:2]
        if img.shape[:2] != size:  # one region size for all, so patches are cut in one gather
            img = np.round(to_rgb32(img, size[0]) * 255).astype(np.uint8)
        n = count_sift_keypoints(img)
        counts.append(n)
        if n >= cfg.min_keypoints:
            kept.append(img)
    if not kept:
        raise HidebenchError(
            f"no region of pool {cfg.source} passed the SIFT filter ({cfg.min_keypoints} keypoints, "
            f"{len(counts)} screened, median {np.median(counts):.0f}); lower min_keypoints or change region")
    return PublicPool(np.stack(kept).astype(np.uint8), len(counts), np.asarray(counts), fp, cfg.patch_mode, screens)
