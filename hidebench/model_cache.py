"""A cache of trained attack models, reusable across challenges and runs.

Learned attacks train on encryptions they make themselves, so a model depends only on the
public scheme, the attacker's data and the attack's config and seed -- not on the release it is
used against. Each entry is ROOT/NAME-HASH/{weights.pt, manifest.json}: HASH digests the spec
(scheme, k, mode, c1, c2, aux, pool, config, seed), the manifest holds the spec, the sha256 of
weights.pt, the training time and curves. weights.pt is written first under a temporary name,
the manifest last, so an interrupted write leaves no entry; an entry whose weights do not match
the recorded hash is reported in one line and retrained.

ROOT: the context's `model_dir` (option `--model-dir`, environment HIDEBENCH_MODELS), by default
the user's cache folder ($XDG_CACHE_HOME or ~/.cache)/hidebench/models.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

from hidebench.stage_cache import config_hash
from hidebench.types import HidebenchError

MODELS_ENV = "HIDEBENCH_MODELS"
WEIGHTS = "weights.pt"
MANIFEST = "manifest.json"


def default_model_dir() -> Path:
    """$HIDEBENCH_MODELS, else the user's cache folder."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hidebench" / "models"


def entry_name(name: str, spec: dict) -> str:
    return f"{name}-{config_hash(spec)}"


class ModelCache:
    """load(name, spec) -> (state_dict, manifest) or None; store(name, spec, state_dict, info).
    root None: nothing is cached (every model is trained afresh)."""

    def __init__(self, root: str | os.PathLike | None, *, log=None):
        self.root = Path(root) if root is not None else None
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def load(self, name: str, spec: dict):
        if self.root is None:
            return None
        d = self.root / entry_name(name, spec)
        try:
            manifest = json.loads((d / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        import torch

        path = d / WEIGHTS
        try:
            blob = path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != manifest.get("weights_sha256"):
                raise ValueError("contents do not match the recorded sha256")
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (any unreadable entry is retrained, never a crash)
            self.log(f"hidebench: model cache entry {d} is corrupt ({type(e).__name__}: {e}); retraining")
            return None
        return state, manifest

    def store(self, name: str, spec: dict, state: dict, info: dict) -> Path | None:
        if self.root is None:
            return None
        import torch

        from hidebench.challenge_io import library_versions, write_bytes, write_json

        d = self.root / entry_name(name, spec)
        d.mkdir(parents=True, exist_ok=True)
        (d / MANIFEST).unlink(missing_ok=True)       # no manifest: not an entry until complete
        buf = io.BytesIO()
        torch.save(state, buf)
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        write_bytes(d / WEIGHTS, buf.getvalue())
        write_json(d / MANIFEST, {"name": name, "spec": spec, "weights_sha256": sha, "created": time.time(),
                                  "size_bytes": (d / WEIGHTS).stat().st_size, **info, "versions": library_versions()})
        return d

    def entries(self) -> list[dict]:
        """One dict per complete entry (id, name, spec, size, created, train_s), newest first."""
        if self.root is None or not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            try:
                m = json.loads((d / MANIFEST).read_text())
            except (OSError, ValueError):
                continue
            out.append({"id": d.name, "name": m.get("name"), "spec": m.get("spec", {}),
                        "size_bytes": m.get("size_bytes", 0), "created": m.get("created", 0),
                        "train_s": m.get("train_s")})
        return sorted(out, key=lambda e: -e["created"])

    def remove(self, ids: list[str] | None = None) -> list[str]:
        """Remove the named entries (all with ids None); unknown ids are an error."""
        if self.root is None or not self.root.is_dir():
            if ids:
                raise HidebenchError(f"no model cache at {self.root}")
            return []
        present = {d.name for d in self.root.iterdir() if d.is_dir()}
        if ids is None:
            ids = sorted(present)
        unknown = [i for i in ids if i not in present]
        if unknown:
            raise HidebenchError(f"no cached model(s) {', '.join(unknown)} in {self.root} (see `hidebench models list`)")
        for i in ids:
            shutil.rmtree(self.root / i)
        return list(ids)
