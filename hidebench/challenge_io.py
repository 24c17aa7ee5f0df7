"""Reading and writing challenges in the 2020 format.

    DIR/encryption.npy     E x 32 x 32 x 3 float32, NHWC, in [-1, 1]
    DIR/label.npy          E x C float32 (nonzero entries: the private images' coefficients)
    DIR/manifest.json      public: recipe (no seed), scheme, public data sources, versions,
                           sha256 of the two public files
    DIR/key/               secret: private.npy, private_label.npy, selection.npy (E x k),
                           lambda.npy (E x k), sign.npy (int8), seed, and key/manifest.json with
                           the sha256 of every key file and of the public manifest

Nothing derived from the key is written outside key/: a public file that hashed a key file
would let anyone confirm a guess of the seed or of the private set.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hidebench.types import HidebenchError, PublicView, SecretKey, one_line, private_slots

PUBLIC_FILES = ("encryption.npy", "label.npy")
KEY_FILES = ("private.npy", "private_label.npy", "selection.npy", "lambda.npy", "sign.npy", "seed")
MANIFEST = "manifest.json"
KEY_MANIFEST = "key/manifest.json"
NPY_MAGIC = b"\x93NUMPY"


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


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically (a temporary file renamed into place): never half-written, and no
    temporary file left behind when writing fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (`write_bytes`)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n").encode())


def json_default(o):
    """JSON for numpy scalars and arrays and paths (json.dumps(..., default=json_default))."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_out_dir(out_dir, *, option: str = "--out", empty: bool = False, overwrite: bool = False,
                  replaceable: frozenset[str] | None = None) -> Path:
    """An output folder that may be written: a folder, or a path that does not exist yet and
    whose nearest existing parent is a folder. With `empty`, it must also hold nothing unless
    `overwrite`, and then only the files named in `replaceable` (relative paths; default: a
    release's, RELEASE_FILES), so that --overwrite never deletes a user's own files. Called
    before any work, so a bad --out costs nothing and changes nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HidebenchError(f"{option} {out} is an existing file, not a folder; choose a folder path")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise HidebenchError(f"{option} {out}: {parent} is a file, so the folder cannot be created")
            break
    if empty and out.is_dir() and any(out.iterdir()):
        if not overwrite:
            what = "a challenge" if (out / "encryption.npy").exists() else "other files"
            raise HidebenchError(f"{out} already holds {what}; choose another folder or pass --overwrite")
        foreign = foreign_files(out, RELEASE_FILES if replaceable is None else replaceable)
        if foreign:
            raise HidebenchError(f"--overwrite replaces only what hidebench wrote, and {out} holds {foreign[0]}, which "
                                 f"is not part of a release ({len(foreign)} such file(s)); choose another folder")
    return out


def check_writable_dir(path, option: str) -> Path:
    """A folder that can be written: created if missing, and a probe file written and removed
    in it. Called before the work whose output goes there (a cache, a model folder), so that a
    read-only or impossible path fails in one line instead of after hours of work."""
    p = Path(path).expanduser()
    check_out_dir(p, option=option)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".hidebench-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise HidebenchError(f"{option} {p} cannot be written: {e.strerror or e}") from None
    return p


# What a release folder holds (relative paths): --overwrite replaces a folder holding only these.
KEY_EXTRA = ("augmentation.npy", "show.png")
KEY_NAMES = frozenset((*KEY_FILES, *KEY_EXTRA, "manifest.json"))
RELEASE_FILES = frozenset((*PUBLIC_FILES, MANIFEST, *(f"key/{n}" for n in KEY_NAMES)))


def foreign_files(folder: Path, allowed: frozenset[str], prefix: str = "") -> list[str]:
    """Relative paths under `folder` that are not in `allowed` (a folder counts when no allowed
    path lies in it, and is not entered); links are never followed. Sorted."""
    out = []
    for p in sorted(folder.iterdir()):
        rel = prefix + p.name
        if p.is_dir() and not p.is_symlink() and any(a.startswith(rel + "/") for a in allowed):
            out += foreign_files(p, allowed, rel + "/")
        elif rel not in allowed:
            out.append(rel + ("/" if p.is_dir() else ""))
    return out


def make_private(path: Path) -> None:
    """Owner-only access (0700 folders, 0600 files): key material on a shared machine."""
    os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _remove_stale(out: Path) -> None:
    """Staging folders a killed earlier write left beside `out` (they may hold a key)."""
    for stale in out.parent.glob(f".{out.name}.*"):
        if stale.is_dir() and not stale.is_symlink() and stale.name.endswith((".partial", ".old")):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def staged_dir(out_dir, *, overwrite: bool = False, replaceable: frozenset[str] | None = None, private: bool = False):
    """Build a folder under a temporary sibling name and rename it into place on success.

    An interrupted or failed write leaves no half-written folder behind; with overwrite, the old
    folder is replaced only once the new one is complete (and only if it holds nothing but
    `replaceable`, see check_out_dir). Staging folders that a killed earlier write left beside
    it are removed once the new folder is in place. private: the folder is owner-only (0700)."""
    out = check_out_dir(out_dir, empty=True, overwrite=overwrite, replaceable=replaceable)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    stage.mkdir()
    if private:
        make_private(stage)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _remove_stale(out)


def save_challenge(out_dir, view: PublicView, key: SecretKey | None, manifest: dict, *,
                   key_info: dict | None = None, overwrite: bool = False) -> Path:
    """Write a challenge folder atomically (see staged_dir).

    The public manifest.json gets `manifest` plus the scheme and the sha256 of the public files;
    key/manifest.json (only with a key) gets the sha256 of every key file and of manifest.json,
    and `key_info` (what the generator knows but must not publish, e.g. private-data fingerprints).
    """
    out = Path(out_dir)
    with staged_dir(out, overwrite=overwrite) as d:
        np.save(d / "encryption.npy", view.encryptions.astype(np.float32))
        np.save(d / "label.npy", view.labels.astype(np.float32))
        scheme = {"k": view.k, "mode": view.mode, "scheme": view.scheme, "T": view.T, "c1": view.c1, "c2": view.c2,
                  "n_encryptions": len(view), "shape": list(view.encryptions.shape[1:]), "class_names": view.class_names}
        if view.augment:       # stated only when set: manifests of plain releases stay as they were
            scheme["augment"] = True
        public = {**manifest, "scheme": scheme, "files": {name: sha256_file(d / name) for name in PUBLIC_FILES}}
        write_json(d / MANIFEST, public)
        if key is not None:
            kd = d / "key"
            kd.mkdir(mode=0o700)
            np.save(kd / "private.npy", key.private.astype(np.float32))
            np.save(kd / "private_label.npy", key.private_labels.astype(np.int64))
            np.save(kd / "selection.npy", key.selection.astype(np.int64))
            np.save(kd / "lambda.npy", key.lambdas.astype(np.float32))
            np.save(kd / "sign.npy", key.sign.astype(np.int8))
            (kd / "seed").write_text(f"{key.seed}\n")
            names = KEY_FILES
            if key.augmentation is not None:
                np.save(kd / "augmentation.npy", key.augmentation.astype(np.int8))
                names = (*KEY_FILES, "augmentation.npy")
            files = {f"key/{name}": sha256_file(kd / name) for name in names}
            files[MANIFEST] = sha256_file(d / MANIFEST)
            write_json(d / KEY_MANIFEST, {"format": "instahide-key/1", "files": files, **(key_info or {})})
            for p in (kd, *kd.iterdir()):
                make_private(p)
    return out


def recorded_hashes(challenge_dir) -> dict[str, str]:
    """sha256 of every file a challenge records: the public manifest's and the key manifest's."""
    d = Path(challenge_dir)
    out = dict(read_manifest(d).get("files", {}))
    if (d / KEY_MANIFEST).is_file():
        out.update(read_key_manifest(d)["files"])
    return out


def read_json_object(p: Path, what: str) -> dict:
    """A JSON object from a file, or one clear error (unreadable, not JSON, not an object)."""
    try:
        m = json.loads(p.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HidebenchError(f"{what} {p} is not valid JSON: {one_line(e)}") from e
    if not isinstance(m, dict):
        raise HidebenchError(f"{what} {p} must hold a JSON object, got {type(m).__name__}")
    return m


def _check_files_field(m: dict, p: Path) -> None:
    files = m.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise HidebenchError(f"{p}: 'files' must map file names to sha256 strings, got {_short(files)}")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


# Fields of a public manifest and the JSON type each must have (a release from someone else is
# checked before any value is used).
_MANIFEST_TYPES = {"recipe": dict, "scheme": dict, "files": dict}
_SCHEME_TYPES = {"k": int, "mode": str, "scheme": str, "T": (int, type(None)), "c1": (int, float),
                 "c2": (int, float), "n_encryptions": int, "shape": list, "class_names": list, "augment": bool}


def read_manifest(challenge_dir) -> dict:
    """The public manifest.json ({} when there is none), its fields' types checked."""
    p = Path(challenge_dir) / MANIFEST
    if not p.is_file():
        return {}
    m = read_json_object(p, "manifest")
    for sect, types, prefix in ((m, _MANIFEST_TYPES, ""), (m.get("scheme"), _SCHEME_TYPES, "scheme.")):
        if not isinstance(sect, dict):
            continue
        for name, want in types.items():
            v = sect.get(name)
            if name in sect and (not isinstance(v, want) or (isinstance(v, bool) and want in (int, (int, float)))):
                raise HidebenchError(f"{p}: field {prefix}{name} has the wrong type ({_short(v)})")
    names = (m.get("scheme") or {}).get("class_names", [])
    if not all(isinstance(c, str) for c in names):
        raise HidebenchError(f"{p}: scheme.class_names must be a list of strings")
    _check_files_field(m, p)
    return m


def read_key_manifest(challenge_dir) -> dict:
    """key/manifest.json: the sha256 of every key file (and of the public manifest)."""
    p = Path(challenge_dir) / KEY_MANIFEST
    if not p.is_file():
        raise HidebenchError(f"{p} is missing: the key cannot be verified, so it is not used (hidebench writes one with "
                             "every key; import a ground truth given as arrays with `hidebench key import`)")
    m = read_json_object(p, "key manifest")
    _check_files_field(m, p)
    m.setdefault("files", {})
    return m


def verify_key_files(challenge_dir) -> None:
    """Refuse a key whose files do not hash as key/manifest.json records them, or whose release
    does not: every key file present must be recorded and match, every recorded one must exist,
    the public manifest must match the hash the key recorded, and the public files the hashes the
    public manifest records. A swapped private.npy and selection.npy would otherwise score any
    decryption as perfect."""
    d = Path(challenge_dir)
    recorded = read_key_manifest(d)["files"]
    for p in sorted((d / "key").iterdir()):
        name = f"key/{p.name}"
        if name in (KEY_MANIFEST, "key/show.png") or not p.is_file():
            continue
        if name not in recorded:
            raise HidebenchError(f"{d / name} is not recorded in {d / KEY_MANIFEST}: the key is not the one that was "
                                 "written (re-import it with `hidebench key import`)")
    public = read_manifest(d).get("files", {})
    checks = [(n, h) for n, h in recorded.items() if n.startswith("key/") or n == MANIFEST]
    checks += [(n, h) for n, h in public.items() if n in PUBLIC_FILES]
    for name, digest in checks:
        if not (d / name).is_file():
            raise HidebenchError(f"{d / name} is recorded in the challenge's manifests but missing")
        if sha256_file(d / name) != digest:
            raise HidebenchError(f"{d / name} does not match the sha256 its manifest records: the challenge was changed "
                                 "after it was written, so it is not scored")


def npy_header(path: Path, what: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, read without unpickling anything, and checked
    against the file's size: a corrupt header or one that declares more data than the file holds
    (a 200-byte file claiming a petabyte) is one clear error, before anything is allocated."""
    import numpy.lib.format as fmt

    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise HidebenchError(f"{what}: {path} is not a .npy file (no NumPy header)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"unsupported format version {version}")
            shape, fortran, dtype = read(f, max_header_size=1 << 16)
        except Exception as e:  # noqa: BLE001  (numpy raises several kinds for a damaged header)
            raise HidebenchError(f"{what}: {path} has a corrupt .npy header ({type(e).__name__}: {e})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise HidebenchError(f"{what}: {path} holds Python objects, not a numeric array")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise HidebenchError(f"{what}: {path} holds dtype {dtype}, not numbers")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need != size - offset:
        raise HidebenchError(f"{what}: {path} declares shape {tuple(shape)} ({dtype}, {need:,} bytes) but holds "
                             f"{size - offset:,} bytes of data: truncated or corrupt")
    return tuple(shape), dtype, offset


def load_npy(path, what: str) -> np.ndarray:
    """A numeric .npy array, or one clear error: missing, not a .npy file, a corrupt header, a
    declared size the file does not hold, or not numbers. Never unpickles."""
    path = Path(path)
    if path.is_dir():
        raise HidebenchError(f"{what}: {path} is a folder, not a file")
    if not path.is_file():
        raise HidebenchError(f"{what} missing: {path} does not exist")
    npy_header(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise HidebenchError(f"{what}: {path} is not a readable .npy file ({one_line(e)})") from e


def check_release_counts(d: Path, enc: np.ndarray, lab: np.ndarray, sch: dict) -> list:
    """The encryptions are not empty and as many as the manifest states, the labels have a
    column per class it names (image and TextHide releases alike); returns the class names."""
    if not len(enc):
        raise HidebenchError(f"{d / 'encryption.npy'} holds no encryptions (shape {enc.shape})")
    if sch.get("n_encryptions") not in (None, len(enc)):
        raise HidebenchError(f"the manifest states {sch['n_encryptions']} encryptions, {d / 'encryption.npy'} holds "
                             f"{len(enc)}")
    names = sch.get("class_names") or []
    if names and lab.ndim == 2 and lab.shape[1] != len(names):
        raise HidebenchError(f"labels have {lab.shape[1]} columns but the manifest names {len(names)} classes")
    return names


def load_public(challenge_dir, *, k: int | None = None, mode: str | None = None, scheme: str | None = None,
                T: int | None = None, n_priv: int | None = None, augment: bool | None = None) -> PublicView:
    """The public view of a challenge. Scheme parameters come from manifest.json (as a release
    states them) or, for a bare 2020-style folder, from the arguments (default: k=6 cross
    InstaHide, not augmented; T from `T` or from `n_priv` = E / T). A given value that contradicts the manifest
    is an error."""
    d = Path(challenge_dir)
    if not d.is_dir():
        raise HidebenchError(f"challenge directory {d} does not exist")
    enc = load_npy(d / "encryption.npy", "challenge encryptions")
    lab = load_npy(d / "label.npy", "challenge labels")
    manifest = read_manifest(d)
    sch = manifest.get("scheme", {})
    if sch.get("scheme") == "texthide":
        raise HidebenchError(f"{d} is a TextHide release (sentence representations, not images): run a text attack "
                             "on it (texthide_masks, texthide_unmix, texthide_invert; see `hidebench list`)")
    check_release_counts(d, enc, lab, sch)
    # releases written before the public scheme stated augmentation hold it in their recipe
    stated_augment = bool(sch.get("augment", manifest.get("recipe", {}).get("scheme", {}).get("augment", False)))
    E = len(enc)
    if n_priv is not None:
        if isinstance(n_priv, bool) or not isinstance(n_priv, int) or n_priv < 1:
            raise HidebenchError(f"n_priv must be a positive integer, got {n_priv!r}")
        if E % n_priv:
            raise HidebenchError(f"{E} encryptions cannot come from n_priv={n_priv} private images with a whole T each")
        if T is not None and T * n_priv != E:
            raise HidebenchError(f"T={T} and n_priv={n_priv} give {T * n_priv} encryptions, the release has {E}")
        T = E // n_priv
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1 or E % T):
        raise HidebenchError(f"T={T!r} must be a positive integer dividing the {E} encryptions")
    if sch and augment is not None and stated_augment != augment:
        raise HidebenchError(f"augment={augment!r} given, but the challenge's manifest states augment={stated_augment!r}")
    for name, given in (("k", k), ("mode", mode), ("scheme", scheme), ("T", T)):
        if given is not None and sch.get(name) is not None and sch[name] != given:
            raise HidebenchError(f"{name}={given!r} given, but the challenge's manifest states {name}={sch[name]!r}")
    view = PublicView(enc, lab, k or sch.get("k", 6), mode or sch.get("mode", "cross"),
                      scheme or sch.get("scheme", "instahide"), sch.get("class_names", []), T=T or sch.get("T"),
                      c1=sch.get("c1", 0.65), c2=sch.get("c2", 0.3),
                      augment=stated_augment if augment is None else augment)
    if view.encryptions.shape[1:] != (32, 32, 3):
        raise HidebenchError(f"encryptions must be E x 32 x 32 x 3, got {view.encryptions.shape}")
    return view


def manifest_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two manifests differ (library versions excluded)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if not prefix and k == "versions":
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += manifest_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def verify_regenerated(challenge_dir, regenerate, release_files: frozenset[str] = RELEASE_FILES) -> dict:
    """Check a release folder against what its recipe and key/seed regenerate, whatever its kind.

    regenerate(manifest, seed, fresh_dir) writes the release the manifest's recipe makes at that
    seed into fresh_dir. Every recorded file must exist ('missing' otherwise) and hash as
    recorded; the public manifest must hash as key/manifest.json recorded it and say what the
    regenerated one says (library versions aside); every regenerated file must hash as recorded
    ('mismatched'); nothing but `release_files` may lie outside key/ ('foreign')."""
    import tempfile

    d = Path(challenge_dir)
    if not d.is_dir():
        raise HidebenchError(f"challenge directory {d} does not exist")
    manifest = read_manifest(d)
    if not manifest.get("recipe"):
        raise HidebenchError(f"{d}/manifest.json is missing or has no recipe: only generated challenges can be verified")
    seed_file = d / "key" / "seed"
    if not seed_file.is_file():
        raise HidebenchError(f"{seed_file} missing: verification needs the challenge's seed")
    recorded = recorded_hashes(d)
    if MANIFEST not in recorded:
        raise HidebenchError(f"{d}/key/manifest.json is missing: it records the hashes of the key files and of "
                             "manifest.json that verification checks")
    missing = sorted(n for n in recorded if not (d / n).is_file())
    mismatched = {n for n in recorded if n not in missing and sha256_file(d / n) != recorded[n]}
    with tempfile.TemporaryDirectory() as tmp:
        fresh_dir = Path(tmp) / "c"
        regenerate(manifest, read_seed(seed_file), fresh_dir)
        fresh = recorded_hashes(fresh_dir)
        fresh_manifest = read_manifest(fresh_dir)
    mismatched |= {n for n in recorded if n != MANIFEST and fresh.get(n) != recorded[n]}
    fields = manifest_differences(manifest, fresh_manifest)
    if fields:
        mismatched.add(MANIFEST)
    foreign = [f for f in foreign_files(d, release_files) if not f.startswith("key/")]
    return {"ok": not missing and not mismatched and not foreign, "files": len(recorded), "missing": missing,
            "mismatched": sorted(mismatched), "manifest_fields": fields, "foreign": foreign}


def read_seed(path) -> int:
    text = Path(path).read_text(errors="replace").strip()
    if not text.isdigit():
        raise HidebenchError(f"{path} must hold a non-negative integer seed, got {text[:40]!r}")
    return int(text)


def has_key(challenge_dir) -> bool:
    return (Path(challenge_dir) / "key").is_dir()


def load_key(challenge_dir, view: PublicView | None = None) -> SecretKey:
    """The ground truth of a challenge (for scoring and oracle experiments only). private.npy
    and selection.npy are required (the metric needs no more); private_label.npy, lambda.npy,
    sign.npy and seed are read when present (a generated key has them all)."""
    d = Path(challenge_dir)
    kd = d / "key"
    if not kd.is_dir():
        raise HidebenchError(f"challenge {d} has no key/ folder: it cannot be scored (generate the challenge with "
                             "hidebench, or import its ground truth with `hidebench key import`)")
    view = view or load_public(d)
    verify_key_files(d)

    def optional(name, what):
        return load_npy(kd / name, what) if (kd / name).exists() else None

    private = load_npy(kd / "private.npy", "key private images")
    sel = load_npy(kd / "selection.npy", "key selection")
    key = SecretKey(private=np.asarray(private, dtype=np.float32),
                    private_labels=optional("private_label.npy", "key private labels"),
                    selection=sel, lambdas=optional("lambda.npy", "key coefficients"),
                    sign=optional("sign.npy", "key sign mask"),
                    seed=read_seed(kd / "seed") if (kd / "seed").is_file() else -1,
                    n_private_slots=private_slots(view.mode, view.k),
                    augmentation=optional("augmentation.npy", "key augmentation"))
    check_key(key, view)
    return key


def check_key(key: SecretKey, view: PublicView) -> None:
    """A key that fits its release: shapes, index ranges, distinct private ids per encryption."""
    E, slots, n = len(view), private_slots(view.mode, view.k), len(key.private)
    from hidebench.types import check_images

    check_images("key private images", key.private, value_range=1.0)
    if key.private.shape[1:] != view.encryptions.shape[1:]:
        raise HidebenchError(f"key private images have shape {key.private.shape[1:]}, the encryptions "
                             f"{view.encryptions.shape[1:]}")
    sel = np.asarray(key.selection)
    if sel.ndim != 2 or len(sel) != E or sel.shape[1] not in (slots, view.k) or not np.issubdtype(sel.dtype, np.integer):
        raise HidebenchError(f"key selection of shape {sel.shape} ({sel.dtype}) does not match {E} encryptions with "
                             f"k={view.k} (expected integers, E x {view.k} or E x {slots} private slots)")
    ids = sel[:, :slots]
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise HidebenchError(f"key selection names private images outside 0..{n - 1}")
    if slots > 1 and (np.sort(ids, 1)[:, 1:] == np.sort(ids, 1)[:, :-1]).any():
        raise HidebenchError("key selection repeats a private image within an encryption")
    for name, arr, shape in (("private labels", key.private_labels, (n,)), ("coefficients", key.lambdas, sel.shape),
                             ("sign mask", key.sign, view.encryptions.shape),
                             ("augmentation", key.augmentation, (E, slots, 3))):
        if arr is not None and np.shape(arr) != shape:
            raise HidebenchError(f"key {name} of shape {np.shape(arr)}, expected {shape}")


KEY_ARRAYS = {"private": ("private.npy", np.float32), "selection": ("selection.npy", np.int64),
              "private_labels": ("private_label.npy", np.int64), "lambdas": ("lambda.npy", np.float32),
              "sign": ("sign.npy", np.int8)}


def import_key(challenge_dir, arrays: dict, *, overwrite: bool = False, release: dict | None = None) -> Path:
    """Write DIR/key/ from ground-truth arrays ('private' N x 32 x 32 x 3 in [-1, 1] and
    'selection' E x slots or E x k, required; 'private_labels', 'lambdas', 'sign' optional),
    checked against the release, with key/manifest.json (sha256 of each file and of the public
    manifest). `release`: the scheme of a folder without a manifest (as for load_public).
    Atomic: a staged folder renamed into place."""
    d = Path(challenge_dir)
    view = load_public(d, **(release or {}))
    unknown = sorted(set(arrays) - set(KEY_ARRAYS))
    if unknown or "private" not in arrays or "selection" not in arrays:
        raise HidebenchError(f"a key needs 'private' and 'selection' arrays (optional: private_labels, lambdas, sign); "
                             f"got {sorted(arrays)}")
    sel = np.asarray(arrays["selection"])
    if not np.issubdtype(sel.dtype, np.integer):
        if not np.issubdtype(sel.dtype, np.floating) or not np.all(np.isfinite(sel)) or np.any(sel != np.round(sel)):
            raise HidebenchError(f"key selection must hold integer image indices, got dtype {sel.dtype}")
    key = SecretKey(private=np.asarray(arrays["private"], dtype=np.float32), private_labels=arrays.get("private_labels"),
                    selection=sel.astype(np.int64), lambdas=arrays.get("lambdas"), sign=arrays.get("sign"), seed=-1,
                    n_private_slots=private_slots(view.mode, view.k))
    check_key(key, view)
    kd = d / "key"
    if kd.exists() and not overwrite:
        raise HidebenchError(f"{kd} already exists; pass --overwrite to replace it")
    with staged_dir(kd, overwrite=True, replaceable=KEY_NAMES, private=True) as stage:
        files = {}
        for name, (fname, dtype) in KEY_ARRAYS.items():
            if arrays.get(name) is not None:
                np.save(stage / fname, np.asarray(arrays[name]).astype(dtype))
                files[f"key/{fname}"] = sha256_file(stage / fname)
        if (d / MANIFEST).is_file():
            files[MANIFEST] = sha256_file(d / MANIFEST)
        write_json(stage / "manifest.json", {"format": "instahide-key/1", "imported": True, "files": files})
        for p in stage.iterdir():
            make_private(p)
    return kd
