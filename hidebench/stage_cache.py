"""On-disk cache for costly pipeline stages, keyed by their config and their inputs.

Each stage writes CACHE/STAGE/arrays.npz and CACHE/STAGE/manifest.json (stage, config, key,
the sha256 of arrays.npz, library versions, seconds). A stage's key hashes its config together
with the digests of the upstream outputs it consumed, so recomputing an upstream stage
invalidates everything downstream of it whenever its output changed. Writes go to temporary
names first (the manifest last), so an interrupted stage never leaves a half-written entry; an
entry whose arrays are truncated, zeroed or do not match the recorded hash is reported in one
line and recomputed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Entries of a stage's output that hold wall-clock measurements: stored with it, but left out of
# its content digest (they differ on every run, and the stages downstream do not depend on them).
MEASUREMENTS = ("timings", "train_s")


def arrays_digest(arrays: dict) -> str:
    """Content hash of a dict of arrays (names, dtypes, shapes and bytes), MEASUREMENTS aside."""
    h = hashlib.sha256()
    for name in sorted(set(arrays) - set(MEASUREMENTS)):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class StageCache:
    """get_or_compute(stage, config, compute, upstream=...) -> dict of arrays.

    Stages named in `recompute` are computed afresh even when their entry matches.
    cache_dir None disables caching (the digests are still computed, so keys stay comparable).
    After a call, `digests[stage]` is the content hash of the stage's output: pass it as
    `upstream` to the stages that consume it.
    """

    def __init__(self, cache_dir: str | os.PathLike | None, *, recompute=(), log=None):
        self.root = Path(cache_dir) if cache_dir is not None else None
        self.recompute = set(recompute)
        self.hits: dict[str, bool] = {}
        self.seconds: dict[str, float] = {}
        self.digests: dict[str, str] = {}
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def manifest(self, stage: str) -> dict | None:
        if self.root is None:
            return None
        p = self.root / stage / "manifest.json"
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None

    def _load(self, stage: str, key: str, validate=None) -> dict | None:
        """The cached arrays if the entry matches `key`, is intact and passes `validate`
        (arrays -> None, raising on an entry whose contents the stage cannot use: an entry can
        hash as its manifest records and still be malformed); None otherwise."""
        m = self.manifest(stage)
        if m is None or m.get("key") != key:
            return None
        path = self.root / stage / "arrays.npz"
        try:
            blob = path.read_bytes()           # read once: hashed, then parsed from memory
            if hashlib.sha256(blob).hexdigest() != m.get("arrays_sha256"):
                raise ValueError("contents do not match the recorded sha256")
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if validate is not None:
                validate(arrays)
            return arrays
        except (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError, RuntimeError,
                zipfile.BadZipFile) as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            self.log(f"hidebench: cache entry {path} is corrupt ({why}); recomputing stage {stage}")
            return None

    def get_or_compute(self, stage: str, config: dict, compute: Callable[[], dict],
                       upstream: tuple[str, ...] | list[str] = (), validate=None) -> dict:
        """The stage's arrays from the cache (when its entry matches and `validate` accepts
        it, see _load) or from compute(), stored for next time."""
        key = config_hash({"config": config, "upstream": list(upstream)})
        arrays = None if stage in self.recompute else self._load(stage, key, validate)
        if arrays is not None:
            self.hits[stage], self.seconds[stage] = True, 0.0
            self.digests[stage] = arrays_digest(arrays)
            return arrays
        t0 = time.perf_counter()
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.hits[stage], self.seconds[stage] = False, time.perf_counter() - t0
        self.digests[stage] = arrays_digest(arrays)
        if self.root is not None:
            self._store(stage, config, key, list(upstream), arrays)
        return arrays

    def _store(self, stage: str, config: dict, key: str, upstream: list, arrays: dict) -> None:
        from hidebench.challenge_io import library_versions, write_json

        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        (d / "manifest.json").unlink(missing_ok=True)     # no manifest: the entry is invalid until complete
        for stale in d.glob(".*.tmp*"):                    # left by a run killed while writing
            stale.unlink(missing_ok=True)
        tmp = d / f".arrays.{uuid.uuid4().hex[:8]}.tmp.npz"
        np.savez(tmp, **arrays)
        with open(tmp, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        os.replace(tmp, d / "arrays.npz")
        write_json(d / "manifest.json", {"stage": stage, "config": config, "upstream": upstream, "key": key,
                                         "arrays_sha256": sha, "versions": library_versions(),
                                         "seconds": self.seconds[stage]})
