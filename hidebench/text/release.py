"""Reading and writing TextHide releases, in the challenge format with representations for images.

    DIR/encryption.npy     E x d float32: masked mixtures of sentence representations
    DIR/label.npy          E x C float32 (nonzero entries: the private sentences' coefficients)
    DIR/manifest.json      public: recipe (no seed), scheme (texthide, k, m, mode, T, dim, ...),
                           the encoder, data sources, versions, sha256 of the two public files
    DIR/key/               secret, owner-only (0700, files 0600): private.npy (n x d), private_label.npy,
                           sentences.json (the n private texts), selection.npy (E x k), lambda.npy
                           (E x k), mask_pool.npy (m x d int8), mask_index.npy (E), seed, and
                           key/manifest.json with the sha256 of every key file and of manifest.json

The rules are the image releases' (hidebench.challenge_io, whose helpers write and check both):
atomic writes, nothing derived from the key outside key/, and a key is used (to score, or as an
oracle) only after its files and the release's hash as key/manifest.json records them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hidebench.challenge_io import (
    KEY_MANIFEST,
    MANIFEST,
    PUBLIC_FILES,
    check_release_counts,
    load_npy,
    make_private,
    read_manifest,
    read_seed,
    sha256_file,
    staged_dir,
    verify_key_files,
    write_json,
)
from hidebench.text.scheme import MAX_MASKS
from hidebench.text.types import TextKey, TextView, check_text_key
from hidebench.types import HidebenchError

TEXT_KEY_FILES = ("private.npy", "private_label.npy", "sentences.json", "selection.npy", "lambda.npy",
                  "mask_pool.npy", "mask_index.npy", "seed")
TEXT_RELEASE_FILES = frozenset((*PUBLIC_FILES, MANIFEST, KEY_MANIFEST, *(f"key/{n}" for n in TEXT_KEY_FILES)))
SCHEME = "texthide"


def is_text_release(challenge_dir) -> bool:
    """Whether a folder's manifest states a TextHide release (False for one without a manifest)."""
    d = Path(challenge_dir)
    if not (d / MANIFEST).is_file():
        return False
    return (read_manifest(d).get("scheme") or {}).get("scheme") == SCHEME


def save_text_release(out_dir, view: TextView, key: TextKey | None, manifest: dict, *, key_info: dict | None = None,
                      overwrite: bool = False) -> Path:
    """Write a TextHide release atomically (hidebench.challenge_io.staged_dir); `manifest` gets the
    scheme and the public files' sha256, key/manifest.json those of the key files and `key_info`."""
    out = Path(out_dir)
    with staged_dir(out, overwrite=overwrite, replaceable=TEXT_RELEASE_FILES) as d:
        np.save(d / "encryption.npy", view.encryptions.astype(np.float32))
        np.save(d / "label.npy", view.labels.astype(np.float32))
        scheme = {"scheme": SCHEME, "k": view.k, "m": view.m, "mode": view.mode, "T": view.T,
                  "n_encryptions": len(view), "dim": view.dim, "shape": [view.dim], "class_names": view.class_names}
        public = {**manifest, "encoder": view.encoder, "scheme": scheme,
                  "files": {name: sha256_file(d / name) for name in PUBLIC_FILES}}
        write_json(d / MANIFEST, public)
        if key is not None:
            kd = d / "key"
            kd.mkdir(mode=0o700)
            np.save(kd / "private.npy", key.private.astype(np.float32))
            np.save(kd / "private_label.npy", key.private_labels.astype(np.int64))
            (kd / "sentences.json").write_text(json.dumps(list(key.sentences), ensure_ascii=False, indent=0) + "\n",
                                               encoding="utf-8")
            np.save(kd / "selection.npy", key.selection.astype(np.int64))
            np.save(kd / "lambda.npy", key.lambdas.astype(np.float32))
            np.save(kd / "mask_pool.npy", key.mask_pool.astype(np.int8))
            np.save(kd / "mask_index.npy", key.mask_index.astype(np.int64))
            (kd / "seed").write_text(f"{key.seed}\n")
            files = {f"key/{name}": sha256_file(kd / name) for name in TEXT_KEY_FILES}
            files[MANIFEST] = sha256_file(d / MANIFEST)
            write_json(d / KEY_MANIFEST, {"format": "texthide-key/1", "files": files, **(key_info or {})})
            for p in (kd, *kd.iterdir()):
                make_private(p)
    return out


def _int_field(scheme: dict, name: str, low: int, high: int | None, path: Path) -> int:
    v = scheme.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        raise HidebenchError(f"{path}: scheme.{name} must be an integer >= {low}"
                             + (f" and <= {high}" if high is not None else "") + f", got {v!r}")
    return v


def load_text_public(challenge_dir) -> TextView:
    """The public view of a TextHide release (its manifest states the scheme: a text release
    always has one)."""
    d = Path(challenge_dir)
    if not d.is_dir():
        raise HidebenchError(f"challenge directory {d} does not exist")
    manifest = read_manifest(d)
    sch = manifest.get("scheme") or {}
    if sch.get("scheme") != SCHEME:
        what = f"states scheme {sch.get('scheme')!r}" if sch else "has no manifest.json stating its scheme"
        raise HidebenchError(f"{d} is not a TextHide release: it {what} (text attacks read the releases "
                             "`hidebench challenge generate texthide-rt` writes)")
    enc = load_npy(d / "encryption.npy", "TextHide encryptions")
    lab = load_npy(d / "label.npy", "TextHide labels")
    p = d / MANIFEST
    k, m = _int_field(sch, "k", 2, None, p), _int_field(sch, "m", 1, MAX_MASKS, p)
    dim = _int_field(sch, "dim", 1, None, p)
    if enc.ndim != 2 or enc.shape[1] != dim:
        raise HidebenchError(f"{d / 'encryption.npy'} has shape {enc.shape}; the manifest states E x {dim} vectors")
    names = check_release_counts(d, enc, lab, sch)
    encoder = manifest.get("encoder") or {}
    if not isinstance(encoder, dict):
        raise HidebenchError(f"{p}: 'encoder' must be a table")
    return TextView(enc, lab, k, m, mode=sch.get("mode", "inside"), T=sch.get("T"), class_names=list(names),
                    encoder=encoder)


def load_text_key(challenge_dir, view: TextView | None = None) -> TextKey:
    """The ground truth of a TextHide release, for scoring and oracles only: refused unless its
    files and the release hash as key/manifest.json records them (verify_key_files)."""
    d = Path(challenge_dir)
    kd = d / "key"
    if not kd.is_dir():
        raise HidebenchError(f"challenge {d} has no key/ folder: it cannot be scored")
    view = view or load_text_public(d)
    verify_key_files(d)
    missing = [n for n in TEXT_KEY_FILES if not (kd / n).is_file()]
    if missing:
        raise HidebenchError(f"{kd} lacks {', '.join(missing)}: a TextHide key holds {', '.join(TEXT_KEY_FILES)}")
    sentences = read_sentences(kd / "sentences.json")
    key = TextKey(private=load_npy(kd / "private.npy", "key private representations").astype(np.float32),
                  private_labels=load_npy(kd / "private_label.npy", "key private labels"),
                  sentences=sentences, selection=load_npy(kd / "selection.npy", "key selection"),
                  lambdas=load_npy(kd / "lambda.npy", "key coefficients"),
                  mask_pool=load_npy(kd / "mask_pool.npy", "key mask pool"),
                  mask_index=load_npy(kd / "mask_index.npy", "key mask index"),
                  seed=read_seed(kd / "seed"), n_private_slots=view.n_private_slots)
    check_text_key(key, view)
    return key


def read_sentences(p: Path) -> list[str]:
    """key/sentences.json: a JSON list of strings (checked against the key by check_text_key)."""
    try:
        v = json.loads(p.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HidebenchError(f"{p} is not valid JSON: {' '.join(str(e).split())}") from None
    if not isinstance(v, list):
        raise HidebenchError(f"{p} must hold a JSON list of sentences, got {type(v).__name__}")
    return v
