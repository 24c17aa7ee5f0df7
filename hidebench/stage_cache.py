"""On-disk cache for costly pipeline stages, keyed by the config that produced them.

Each stage writes CACHE/STAGE/arrays.npz and CACHE/STAGE/manifest.json (stage, config, its
hash, library versions, seconds). A rerun with the same config loads the arrays; a changed
config recomputes and overwrites. Writes go to a temporary name first, so an interrupted or
failed stage never leaves a half-written cache behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageCache:
    """get_or_compute(stage, config, compute) -> dict of arrays; cache_dir None disables caching."""

    def __init__(self, cache_dir: str | os.PathLike | None):
        self.root = Path(cache_dir) if cache_dir is not None else None
        self.hits: dict[str, bool] = {}
        self.seconds: dict[str, float] = {}

    def manifest(self, stage: str) -> dict | None:
        if self.root is None:
            return None
        p = self.root / stage / "manifest.json"
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def get_or_compute(self, stage: str, config: dict, compute: Callable[[], dict]) -> dict:
        h = config_hash(config)
        m = self.manifest(stage)
        if m is not None and m.get("config_hash") == h and (self.root / stage / "arrays.npz").is_file():
            with np.load(self.root / stage / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            self.hits[stage], self.seconds[stage] = True, 0.0
            return arrays
        t0 = time.perf_counter()
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.hits[stage], self.seconds[stage] = False, time.perf_counter() - t0
        if self.root is not None:
            from hidebench.challenge_io import library_versions, write_json

            d = self.root / stage
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "arrays.tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, d / "arrays.npz")
            write_json(d / "manifest.json", {"stage": stage, "config": config, "config_hash": h,
                                             "versions": library_versions(), "seconds": self.seconds[stage]})
        return arrays
