"""Core data types that flow through the pipeline.

recipe -> ImageSet -> defense -> (PublicView, SecretKey) -> attack -> reconstruction -> metrics.
The PublicView is all an attacker may see; the SecretKey goes to the scorer (or to an
oracle mode that an experiment names explicitly).
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np

IMAGE_SHAPE = (32, 32, 3)
SCHEMES = ("instahide", "mixup")
MODES = ("inside", "cross")


class HidebenchError(ValueError):
    """A user-facing error: bad input, missing data, infeasible parameters."""


def one_line(e: BaseException, *, with_type: bool = False) -> str:
    """An exception's message on one line (its type's name when it has none). with_type: name the
    type too unless it is a HidebenchError, for errors raised by arbitrary code (a worker's run),
    whose message alone may not say what went wrong ('KeyError: 3')."""
    msg = " ".join(str(e).split())
    if with_type and not isinstance(e, HidebenchError):
        return f"{type(e).__name__}: {msg}".rstrip(": ")
    return msg or type(e).__name__


_SIMPLE_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _type_ok(value, tname: str) -> bool:
    if tname == "bool":
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False          # True is an int to Python, never to a config
    if tname == "int":
        return isinstance(value, numbers.Integral)
    if tname == "float":
        return isinstance(value, numbers.Real)
    if tname == "str":
        return isinstance(value, str)
    return True


def check_field_types(obj, section: str = "") -> None:
    """Check a config dataclass instance's simple fields (int, float, str, bool, optionally None)
    against their annotations: a HidebenchError naming the field and the value's repr, never a
    TypeError from a later comparison (e.g. T = '5' from a TOML string)."""
    prefix = f"{section}." if section else ""
    for f in dataclasses.fields(obj):
        options = [t.strip() for t in str(f.type).split("|")]
        value = getattr(obj, f.name)
        if value is None and "None" in options:
            continue
        simple = [t for t in options if t in _SIMPLE_TYPES]
        if not simple or len(simple) != len([t for t in options if t != "None"]):
            continue          # a container or class field: its own validation applies
        if not any(_type_ok(value, t) for t in simple):
            want = " or ".join(_SIMPLE_TYPES[t] for t in simple) + (" or none" if "None" in options else "")
            raise HidebenchError(f"{prefix}{f.name} must be {want}, got {value!r} ({type(value).__name__})")


def check_images(name: str, x: np.ndarray, *, ndim: int = 4, value_range: float | None = None) -> np.ndarray:
    """Validate an NHWC image batch: shape, finiteness and (optionally) |x| <= value_range."""
    x = np.asarray(x)
    if x.ndim != ndim or (ndim == 4 and x.shape[-1] not in (1, 3)):
        raise HidebenchError(f"{name}: expected an N x H x W x C array, got shape {x.shape}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise HidebenchError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise HidebenchError(f"{name}: contains {bad} NaN or infinite values")
    if value_range is not None and x.size and np.abs(x).max() > value_range + 1e-5:
        raise HidebenchError(f"{name}: values must lie in [-{value_range}, {value_range}], max |x| = {np.abs(x).max():.4g}")
    return x


@dataclass
class ImageSet:
    """Images as float32 NHWC in [-1, 1] with integer labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str = ""
    fingerprint: str = ""

    def __post_init__(self):
        self.images = check_images(f"images of {self.source or 'image set'}", self.images, value_range=1.0).astype(np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise HidebenchError(f"{self.source}: {len(self.images)} images but labels of shape {self.labels.shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise HidebenchError(f"{self.source}: labels outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> ImageSet:
        idx = np.asarray(idx)
        return ImageSet(self.images[idx], self.labels[idx], list(self.classes), self.source, self.fingerprint)


@dataclass
class PublicView:
    """What an InstaHide/Mixup release publishes: encryptions, mixed labels and the scheme.

    encryptions: E x H x W x C float32 in [-1, 1]; labels: E x n_classes float32, whose
    nonzero entries are the private images' coefficients.
    """

    encryptions: np.ndarray
    labels: np.ndarray
    k: int
    mode: str
    scheme: str
    class_names: list[str] = field(default_factory=list)
    T: int | None = None   # encryptions per private image, when the release states it
    c1: float = 0.65       # coefficient bounds, as the release states them (defaults: the paper's)
    c2: float = 0.3
    augment: bool = False  # every private image cropped and flipped afresh per encryption (as the release states)

    def __post_init__(self):
        self.encryptions = check_images("encryptions", self.encryptions, value_range=1.0).astype(np.float32)
        labels = np.asarray(self.labels)
        if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
            raise HidebenchError(f"labels: expected real numbers, got dtype {labels.dtype}")
        self.labels = labels.astype(np.float32)
        if self.labels.ndim != 2 or len(self.labels) != len(self.encryptions):
            raise HidebenchError(
                f"labels of shape {self.labels.shape} do not match {len(self.encryptions)} encryptions (expected E x n_classes)")
        if not np.all(np.isfinite(self.labels)):
            raise HidebenchError("labels contain NaN or infinite values")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() > 1 + 1e-5):
            raise HidebenchError(f"labels must be mixing coefficients in [0, 1], found values in "
                                 f"[{self.labels.min():.4g}, {self.labels.max():.4g}]")
        if self.mode not in MODES:
            raise HidebenchError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.scheme not in SCHEMES:
            raise HidebenchError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if not _type_ok(self.k, "int") or self.k < 2:
            raise HidebenchError(f"k must be an integer >= 2, got {self.k!r}")
        self.k = int(self.k)
        if self.T is not None:
            if not _type_ok(self.T, "int") or self.T < 1:
                raise HidebenchError(f"T must be a positive integer or none, got {self.T!r}")
            self.T = int(self.T)
            if len(self.encryptions) % self.T:
                raise HidebenchError(f"T={self.T} does not divide the {len(self.encryptions)} encryptions: a release "
                                     "holds T encryptions of every private image")
        for name in ("c1", "c2"):
            v = getattr(self, name)
            if not _type_ok(v, "float") or not 0 <= v <= 1:
                raise HidebenchError(f"{name} must be a number in [0, 1], got {v!r}")
        if not isinstance(self.augment, (bool, np.bool_)):
            raise HidebenchError(f"augment must be true or false, got {self.augment!r}")
        self.augment = bool(self.augment)
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.labels.shape[1])]

    @property
    def n_private_slots(self) -> int:
        return private_slots(self.mode, self.k)

    @property
    def n_private(self) -> int | None:
        """Number of private images, E / T, when the release states T."""
        return len(self.encryptions) // self.T if self.T else None

    def __len__(self) -> int:
        return len(self.encryptions)


def private_slots(mode: str, k: int) -> int:
    """Number of private images in each encryption: 2 cross-dataset, k inside-dataset."""
    return 2 if mode == "cross" else k


@dataclass
class SecretKey:
    """Ground truth of a release, in release order.

    selection[e, j] indexes the private set for the private slots (j < n_private_slots) and
    the public patch bank for the others; slot 0 is the image encryption e was made for.
    A minimal key (a ground truth imported from arrays) holds only the private images and the
    private slots of the selection: the metric needs no more; labels, coefficients and the sign
    mask are then None, and what needs them says so.
    """

    private: np.ndarray                  # n x H x W x C float32 in [-1, 1]
    private_labels: np.ndarray | None    # n int64
    selection: np.ndarray                # E x k int64 (E x n_private_slots in an imported minimal key)
    lambdas: np.ndarray | None           # E x k float32
    sign: np.ndarray | None              # E x H x W x C int8, all ones for Mixup
    seed: int
    n_private_slots: int
    augmentation: np.ndarray | None = None   # E x n_private_slots x 3 int8 (dy, dx, flip) of an augmented release

    def private_of(self, rows=None) -> np.ndarray:
        """Indices (E x n_private_slots) of the private images in each encryption."""
        sel = self.selection if rows is None else self.selection[rows]
        return sel[:, : self.n_private_slots]
