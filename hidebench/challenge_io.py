"""Reading and writing challenges in the 2020 format.

    DIR/encryption.npy   E x 32 x 32 x 3 float32, NHWC, in [-1, 1]
    DIR/label.npy        E x C float32 (nonzero entries: the private images' coefficients)
    DIR/manifest.json    recipe (no seed), scheme, data-source fingerprints, versions, sha256s
    DIR/key/             ground truth: private.npy, private_label.npy, selection.npy (E x k),
                         lambda.npy (E x k), sign.npy (int8), seed
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hidebench.types import HidebenchError, PublicView, SecretKey, private_slots

PUBLIC_FILES = ("encryption.npy", "label.npy")
KEY_FILES = ("private.npy", "private_label.npy", "selection.npy", "lambda.npy", "sign.npy", "seed")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict:
    import platform

    import numpy
    import scipy
    import skimage

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
           "scikit-image": skimage.__version__}
    from hidebench import __version__

    out["hidebench"] = __version__
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_challenge(out_dir, view: PublicView, key: SecretKey | None, manifest: dict) -> Path:
    """Write public files, the key (if given) and manifest.json with a sha256 of every file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "encryption.npy", view.encryptions.astype(np.float32))
    np.save(out / "label.npy", view.labels.astype(np.float32))
    files = {name: sha256_file(out / name) for name in PUBLIC_FILES}
    if key is not None:
        kd = out / "key"
        kd.mkdir(exist_ok=True)
        np.save(kd / "private.npy", key.private.astype(np.float32))
        np.save(kd / "private_label.npy", key.private_labels.astype(np.int64))
        np.save(kd / "selection.npy", key.selection.astype(np.int64))
        np.save(kd / "lambda.npy", key.lambdas.astype(np.float32))
        np.save(kd / "sign.npy", key.sign.astype(np.int8))
        (kd / "seed").write_text(f"{key.seed}\n")
        files.update({f"key/{name}": sha256_file(kd / name) for name in KEY_FILES})
    scheme = {"k": view.k, "mode": view.mode, "scheme": view.scheme, "T": view.T, "n_encryptions": len(view),
              "shape": list(view.encryptions.shape[1:]), "class_names": view.class_names}
    write_json(out / "manifest.json", {**manifest, "scheme": scheme, "files": files})
    return out


def read_manifest(challenge_dir) -> dict:
    p = Path(challenge_dir) / "manifest.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise HidebenchError(f"{p} is not valid JSON: {e}") from e


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise HidebenchError(f"{what} missing: {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise HidebenchError(f"{path} is not a readable .npy file: {e}") from e


def load_public(challenge_dir, *, k: int | None = None, mode: str | None = None, scheme: str | None = None) -> PublicView:
    """The public view of a challenge. Scheme parameters come from manifest.json (as a release
    states them) or, for a bare 2020-style folder, from the arguments (default: k=6 cross InstaHide)."""
    d = Path(challenge_dir)
    if not d.is_dir():
        raise HidebenchError(f"challenge directory {d} does not exist")
    enc = _load_npy(d / "encryption.npy", "challenge encryptions")
    lab = _load_npy(d / "label.npy", "challenge labels")
    sch = read_manifest(d).get("scheme", {})
    for name, given in (("k", k), ("mode", mode), ("scheme", scheme)):
        if given is not None and name in sch and sch[name] != given:
            raise HidebenchError(f"{name}={given!r} given, but the challenge's manifest states {name}={sch[name]!r}")
    view = PublicView(enc, lab, k or sch.get("k", 6), mode or sch.get("mode", "cross"),
                      scheme or sch.get("scheme", "instahide"), sch.get("class_names", []), T=sch.get("T"))
    if view.encryptions.shape[1:] != (32, 32, 3):
        raise HidebenchError(f"encryptions must be E x 32 x 32 x 3, got {view.encryptions.shape}")
    return view


def has_key(challenge_dir) -> bool:
    return (Path(challenge_dir) / "key").is_dir()


def load_key(challenge_dir, view: PublicView | None = None) -> SecretKey:
    """The ground truth of a generated challenge (for scoring and oracle experiments only)."""
    d = Path(challenge_dir)
    kd = d / "key"
    if not kd.is_dir():
        raise HidebenchError(f"challenge {d} has no key/ folder: it cannot be scored (only generated challenges carry their key)")
    view = view or load_public(d)
    sel = _load_npy(kd / "selection.npy", "key selection")
    key = SecretKey(private=_load_npy(kd / "private.npy", "key private images").astype(np.float32),
                    private_labels=_load_npy(kd / "private_label.npy", "key private labels"),
                    selection=sel, lambdas=_load_npy(kd / "lambda.npy", "key coefficients"),
                    sign=_load_npy(kd / "sign.npy", "key sign mask"),
                    seed=int((kd / "seed").read_text().strip()) if (kd / "seed").is_file() else -1,
                    n_private_slots=private_slots(view.mode, view.k))
    if sel.shape != (len(view), view.k):
        raise HidebenchError(f"key selection of shape {sel.shape} does not match {len(view)} encryptions with k={view.k}")
    return key
