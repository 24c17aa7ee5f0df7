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
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            self.log(f"hidebench: model cache entry {d} is corrupt ({why}); retraining")
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
        """One dict per complete entry (id, name, spec, size, created, train_s), newest first.
        A folder is an entry only with a manifest that hidebench wrote (name, spec and the
        weights' sha256) beside its weights: nothing else in the folder is listed or removed."""
        if self.root is None or not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            m = _entry_manifest(d)
            if m is None:
                continue
            out.append({"id": d.name, "name": m["name"], "spec": m["spec"],
                        "size_bytes": _number(m.get("size_bytes"), 0), "created": _number(m.get("created"), 0),
                        "train_s": _number(m.get("train_s"), None)})
        return sorted(out, key=lambda e: -e["created"])

    def remove(self, ids: list[str] | None = None) -> list[str]:
        """Remove the named entries (all entries with ids None); an id that is not an entry is an
        error, and folders that are not entries are never touched."""
        present = {e["id"] for e in self.entries()}
        if ids is None:
            ids = sorted(present)
        unknown = [i for i in ids if i not in present]
        if unknown:
            where = self.root if self.root is not None and self.root.is_dir() else f"{self.root} (no such folder)"
            raise HidebenchError(f"no cached model(s) {', '.join(unknown)} in {where} (see `hidebench models list`)")
        for i in ids:
            shutil.rmtree(self.root / i)
        return list(ids)


def _entry_manifest(d: Path) -> dict | None:
    """The manifest of a model-cache entry folder, or None when d is not one."""
    if not d.is_dir() or d.is_symlink() or not (d / WEIGHTS).is_file():
        return None
    try:
        m = json.loads((d / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    ok = (isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("spec"), dict)
          and isinstance(m.get("weights_sha256"), str) and d.name == entry_name(m["name"], m["spec"]))
    return m if ok else None


def _number(v, default):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default
