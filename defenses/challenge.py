"""Generate, verify and display InstaHide challenges from recipes.

Randomness: one SeedSequence per challenge (the recipe's seed, a --seed, or 128 bits of OS
entropy), spawned into independent streams for private selection, pool screening, patch
cutting and encryption. The seed is written to key/seed only, never to the public files.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.instahide import encrypt
from hidebench.challenge_io import library_versions, load_key, load_public, read_manifest, save_challenge, sha256_file
from hidebench.data import build_pool, load_source, source_size
from hidebench.recipes import Recipe, recipe_from_dict
from hidebench.types import HidebenchError, PublicView, SecretKey


@dataclass
class GeneratedChallenge:
    view: PublicView
    key: SecretKey
    manifest: dict
    timings: dict


def generate(recipe: Recipe, *, seed: int | None = None, data_root=None, progress: bool = True,
             download: bool = False) -> GeneratedChallenge:
    """Build a challenge in memory: pick private images, screen the public pool, encrypt.

    download lets torchvision fetch CIFAR-10 into the data root when it is not there."""
    seed = recipe.seed if seed is None else seed
    root = np.random.SeedSequence(seed)
    s_priv, s_pool, s_patch, s_enc = root.spawn(4)
    cfg = recipe.scheme
    timings = {}

    t = time.perf_counter()
    n_avail = source_size(recipe.private.source, data_root=data_root, download=download)
    if recipe.private.n_priv > n_avail:
        raise HidebenchError(f"private.n_priv={recipe.private.n_priv} but {recipe.private.source} has only {n_avail} images")
    idx = np.sort(np.random.default_rng(s_priv).choice(n_avail, recipe.private.n_priv, replace=False))
    private = load_source(recipe.private.source, data_root=data_root, indices=idx, download=download)
    timings["load_private_s"] = time.perf_counter() - t

    patches, pool_stats, pool_fp = None, {}, None
    n_public = cfg.k - cfg.n_private_slots
    if n_public:
        t = time.perf_counter()
        pool = build_pool(recipe.pool, np.random.default_rng(s_pool), data_root=data_root, progress=progress)
        timings["screen_pool_s"] = time.perf_counter() - t
        t = time.perf_counter()
        n_patches = len(private) * cfg.T * n_public  # one fresh patch per public slot, on average
        patches, _ = pool.patches(np.random.default_rng(s_patch), n_patches)
        timings["cut_patches_s"] = time.perf_counter() - t
        pool_fp = pool.fingerprint
        pool_stats = {"screened": pool.screened, "accepted": len(pool.regions),
                      "acceptance_rate": round(pool.acceptance_rate, 4),
                      "median_keypoints": float(np.median(pool.keypoints)), "bank_size": n_patches}

    t = time.perf_counter()
    view, key = encrypt(private.images, private.labels, len(private.classes), cfg, seed=s_enc,
                        public_patches=patches, class_names=private.classes)
    timings["encrypt_s"] = time.perf_counter() - t
    key.seed = int(root.entropy)
    manifest = {"format": "instahide-challenge/1", "recipe": recipe.to_dict(with_seed=False),
                "data": {"private": {"source": recipe.private.source, "fingerprint": private.fingerprint,
                                     "available": n_avail},
                         "pool": {"source": recipe.pool.source, "fingerprint": pool_fp, **pool_stats} if n_public else None},
                "versions": library_versions()}
    return GeneratedChallenge(view, key, manifest, timings)


def generate_to_dir(recipe: Recipe, out_dir, *, seed: int | None = None, data_root=None, progress: bool = True,
                    overwrite: bool = False, download: bool = False) -> GeneratedChallenge:
    out = Path(out_dir)
    if (out / "encryption.npy").exists() and not overwrite:
        raise HidebenchError(f"{out} already holds a challenge; choose another --out or pass --overwrite")
    ch = generate(recipe, seed=seed, data_root=data_root, progress=progress, download=download)
    save_challenge(out, ch.view, ch.key, ch.manifest)
    return ch


def verify(challenge_dir, *, data_root=None, progress: bool = True) -> dict:
    """Regenerate a challenge from its manifest and key/seed; compare every file's sha256."""
    d = Path(challenge_dir)
    manifest = read_manifest(d)
    if not manifest.get("recipe"):
        raise HidebenchError(f"{d}/manifest.json is missing or has no recipe: only generated challenges can be verified")
    seed_file = d / "key" / "seed"
    if not seed_file.is_file():
        raise HidebenchError(f"{seed_file} missing: verification needs the challenge's seed")
    recipe = recipe_from_dict(manifest["recipe"])
    seed = int(seed_file.read_text().strip())
    with tempfile.TemporaryDirectory() as tmp:
        ch = generate(recipe, seed=seed, data_root=data_root, progress=progress)
        save_challenge(tmp, ch.view, ch.key, ch.manifest)
        fresh = {name: sha256_file(Path(tmp) / name) for name in manifest.get("files", {})}
    recorded = {name: sha256_file(d / name) if (d / name).is_file() else None for name in manifest.get("files", {})}
    mismatched = sorted(n for n in recorded if recorded[n] != fresh[n] or recorded[n] != manifest["files"][n])
    return {"ok": not mismatched and bool(recorded), "files": len(recorded), "mismatched": mismatched}


def show(challenge_dir, out_png, *, n_private: int = 6, n_enc: int = 8) -> Path:
    """PNG grid: each row a private image, then encryptions made for it (|e| and e)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = load_public(challenge_dir)
    key = load_key(challenge_dir, view)
    rows = min(n_private, len(key.private))
    fig, axes = plt.subplots(rows, n_enc + 1, figsize=(1.2 * (n_enc + 1), 1.25 * rows), squeeze=False)
    for r in range(rows):
        mine = np.flatnonzero(key.selection[:, 0] == r)[:n_enc]
        axes[r, 0].imshow((key.private[r] + 1) / 2)
        axes[r, 0].set_title("private", fontsize=7)
        for c in range(n_enc):
            ax = axes[r, c + 1]
            if c < len(mine):
                ax.imshow(np.clip((view.encryptions[mine[c]] + 1) / 2, 0, 1))
                ax.set_title(f"enc {mine[c]} λ={key.lambdas[mine[c], 0]:.2f}", fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{Path(challenge_dir).name}: k={view.k} {view.mode}-dataset {view.scheme}", fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
