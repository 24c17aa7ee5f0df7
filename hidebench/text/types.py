"""The public view and the key of a TextHide release: the text counterparts of
hidebench.types.PublicView and SecretKey, with representations (E x d vectors) in place of images.

recipe -> TextSet -> encoder -> representations -> TextHide -> (TextView, TextKey) -> attack.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hidebench.text.scheme import TEXT_MODES, text_private_slots
from hidebench.types import HidebenchError


def check_vectors(name: str, x, *, dim: int | None = None) -> np.ndarray:
    """A float N x d array of finite values (d = dim when given); one clear error otherwise."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise HidebenchError(f"{name}: expected an N x d array of vectors, got shape {x.shape}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise HidebenchError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        raise HidebenchError(f"{name}: expected float vectors, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise HidebenchError(f"{name}: vectors of dimension {x.shape[1]}, expected {dim}")
    if not np.all(np.isfinite(x)):
        raise HidebenchError(f"{name}: contains {int(np.sum(~np.isfinite(x)))} NaN or infinite values")
    return x


@dataclass
class TextView:
    """What a TextHide release publishes: encryptions (E x d float32, masked mixtures of sentence
    representations), mixed labels (E x n_classes; the nonzero entries are the private
    sentences' coefficients) and the scheme: k, m (mask-pool size), T, mode, the encoder."""

    encryptions: np.ndarray
    labels: np.ndarray
    k: int
    m: int
    mode: str = "inside"
    T: int | None = None
    class_names: list[str] = field(default_factory=list)
    encoder: dict = field(default_factory=dict)
    scheme: str = "texthide"

    def __post_init__(self):
        self.encryptions = check_vectors("encryptions", self.encryptions).astype(np.float32)
        lab = np.asarray(self.labels)
        if lab.dtype == np.bool_ or not np.issubdtype(lab.dtype, np.number) or lab.ndim != 2 \
                or len(lab) != len(self.encryptions):
            raise HidebenchError(f"labels of shape {lab.shape} ({lab.dtype}) do not match {len(self.encryptions)} "
                                 "encryptions (expected E x n_classes numbers)")
        self.labels = lab.astype(np.float32)
        if not np.all(np.isfinite(self.labels)) or (self.labels.size and (self.labels.min() < 0
                                                                          or self.labels.max() > 1 + 1e-5)):
            raise HidebenchError("labels must be mixing coefficients in [0, 1]")
        for name, low in (("k", 2), ("m", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise HidebenchError(f"{name} must be an integer >= {low}, got {v!r}")
        self.k, self.m = int(self.k), int(self.m)
        if self.mode not in TEXT_MODES:
            raise HidebenchError(f"mode must be one of {TEXT_MODES}, got {self.mode!r}")
        if self.T is not None:
            if isinstance(self.T, bool) or not isinstance(self.T, (int, np.integer)) or self.T < 1 \
                    or len(self.encryptions) % self.T:
                raise HidebenchError(f"T={self.T!r} must be a positive integer dividing the {len(self)} encryptions")
            self.T = int(self.T)
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.labels.shape[1])]

    @property
    def dim(self) -> int:
        return self.encryptions.shape[1]

    @property
    def n_private_slots(self) -> int:
        return text_private_slots(self.mode, self.k)

    @property
    def n_private(self) -> int | None:
        return len(self) // self.T if self.T else None

    def __len__(self) -> int:
        return len(self.encryptions)


@dataclass
class TextKey:
    """Ground truth of a TextHide release, in release order. selection[e, :n_private_slots] index
    the private sentences (slot 0: the one encryption e was made for), the other columns the
    public corpus (inter); lambdas the coefficients of those columns; mask_pool the m sign masks
    (int8, +-1) and mask_index[e] the one encryption e carries."""

    private: np.ndarray          # n x d float32 representations
    private_labels: np.ndarray   # n int64
    sentences: list[str]         # n private texts
    selection: np.ndarray        # E x k int64
    lambdas: np.ndarray          # E x k float32
    mask_pool: np.ndarray        # m x d int8
    mask_index: np.ndarray       # E int64
    seed: int
    n_private_slots: int

    def private_of(self, rows=None) -> np.ndarray:
        sel = self.selection if rows is None else self.selection[rows]
        return sel[:, : self.n_private_slots]

    def masks(self) -> np.ndarray:
        """E x d: the mask of every encryption."""
        return self.mask_pool[self.mask_index]


def check_text_key(key: TextKey, view: TextView) -> None:
    """A key that fits its release: shapes, index ranges, distinct private ids per encryption."""
    E, n, d = len(view), len(key.private), view.dim
    check_vectors("key private representations", key.private, dim=d)
    slots = view.n_private_slots
    sel = np.asarray(key.selection)
    if sel.shape != (E, view.k) or not np.issubdtype(sel.dtype, np.integer):
        raise HidebenchError(f"key selection of shape {sel.shape} ({sel.dtype}), expected ({E}, {view.k}) integers")
    ids = sel[:, :slots]
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise HidebenchError(f"key selection names private sentences outside 0..{n - 1}")
    if slots > 1 and (np.sort(ids, 1)[:, 1:] == np.sort(ids, 1)[:, :-1]).any():
        raise HidebenchError("key selection repeats a private sentence within an encryption")
    pool, idx = np.asarray(key.mask_pool), np.asarray(key.mask_index)
    if pool.shape != (view.m, d) or not np.isin(pool, (-1, 1)).all():
        raise HidebenchError(f"key mask pool of shape {pool.shape} must be {view.m} x {d} signs (+-1)")
    if idx.shape != (E,) or not np.issubdtype(idx.dtype, np.integer) or (E and (idx.min() < 0 or idx.max() >= view.m)):
        raise HidebenchError(f"key mask index must be {E} integers in 0..{view.m - 1}")
    for name, arr, shape in (("private labels", key.private_labels, (n,)), ("coefficients", key.lambdas, sel.shape)):
        if np.shape(arr) != shape:
            raise HidebenchError(f"key {name} of shape {np.shape(arr)}, expected {shape}")
    if len(key.sentences) != n or not all(isinstance(s, str) for s in key.sentences):
        raise HidebenchError(f"key sentences must be {n} strings, one per private representation")
