"""Generate, verify and display InstaHide challenges from recipes.

Randomness: one SeedSequence per challenge (the recipe's seed, a --seed, or 128 bits of OS
entropy), spawned into independent streams for private selection, pool screening, patch
cutting and encryption. The seed is written to key/seed only, never to the public files: the
seed regenerates the whole key, so a release is only as secret as its seed is unguessable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hidebench.challenge_io import (
    check_out_dir,
    library_versions,
    load_key,
    load_public,
    make_private,
    read_manifest,
    save_challenge,
    verify_regenerated,
)
from hidebench.data import build_pool, load_source, source_size
from hidebench.defenses.instahide import encrypt
from hidebench.recipes import Recipe, recipe_from_dict
from hidebench.resources import IMAGE_BYTES, check_memory
from hidebench.types import HidebenchError, PublicView, SecretKey


@dataclass
class GeneratedChallenge:
    view: PublicView
    key: SecretKey
    manifest: dict     # public: goes to manifest.json
    key_info: dict     # secret: goes to key/manifest.json
    timings: dict
    # each public patch's origin in the pool (region, top, left), None without public slots: which
    # slots reuse one region. Held in memory only (diagnostics regenerate it from the key's seed).
    public_origin: np.ndarray | None = None


def generate(recipe: Recipe, *, seed: int | None = None, data_root=None, progress: bool = True,
             download: bool = False) -> GeneratedChallenge:
    """Build a challenge in memory: pick private images, screen the public pool, encrypt.

    download lets torchvision fetch CIFAR-10 into the data root when it is not there."""
    seed = recipe.seed if seed is None else seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise HidebenchError(f"seed must be a non-negative integer, got {seed!r}")
    root = np.random.SeedSequence(seed)
    s_priv, s_pool, s_patch, s_enc = root.spawn(4)
    cfg = recipe.scheme
    E = recipe.private.n_priv * cfg.T
    check_memory(E * (IMAGE_BYTES * (3 + cfg.k - cfg.n_private_slots) + IMAGE_BYTES // 4 + 16 * cfg.k),
                 f"a release of {E:,} encryptions (n_priv {recipe.private.n_priv} x T {cfg.T})")
    timings = {}

    t = time.perf_counter()
    n_avail = source_size(recipe.private.source, data_root=data_root, download=download)
    if recipe.private.n_priv > n_avail:
        raise HidebenchError(f"private.n_priv={recipe.private.n_priv} but {recipe.private.source} has only {n_avail} images")
    idx = np.sort(np.random.default_rng(s_priv).choice(n_avail, recipe.private.n_priv, replace=False))
    private = load_source(recipe.private.source, data_root=data_root, indices=idx, download=download)
    timings["load_private_s"] = time.perf_counter() - t

    patches, origin, pool_stats, pool_fp = None, None, {}, None
    n_public = cfg.k - cfg.n_private_slots
    if n_public:
        t = time.perf_counter()
        pool = build_pool(recipe.pool, np.random.default_rng(s_pool), data_root=data_root, progress=progress)
        timings["screen_pool_s"] = time.perf_counter() - t
        t = time.perf_counter()
        n_patches = len(private) * cfg.T * n_public  # one fresh patch per public slot, on average
        patches, origin = pool.patches(np.random.default_rng(s_patch), n_patches)
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
    # The private source's fingerprint stays in the key: for a source no larger than the private
    # set it would confirm a guess of the private images.
    manifest = {"format": "instahide-challenge/1", "recipe": recipe.to_dict(with_seed=False),
                "data": {"private": {"source": recipe.private.source, "available": n_avail},
                         "pool": {"source": recipe.pool.source, "fingerprint": pool_fp, **pool_stats} if n_public else None},
                "versions": library_versions()}
    key_info = {"private_source_fingerprint": private.fingerprint}
    return GeneratedChallenge(view, key, manifest, key_info, timings, origin)


def generate_to_dir(recipe: Recipe, out_dir, *, seed: int | None = None, data_root=None, progress: bool = True,
                    overwrite: bool = False, download: bool = False) -> GeneratedChallenge:
    """generate() and write the challenge atomically: an interrupted run leaves no partial folder."""
    out = check_out_dir(out_dir, empty=True, overwrite=overwrite)     # before the work, not after it
    ch = generate(recipe, seed=seed, data_root=data_root, progress=progress, download=download)
    save_challenge(out, ch.view, ch.key, ch.manifest, key_info=ch.key_info, overwrite=overwrite)
    return ch


def verify(challenge_dir, *, data_root=None, progress: bool = True) -> dict:
    """Check a challenge folder against what its recipe and key/seed regenerate
    (hidebench.challenge_io.verify_regenerated); a TextHide release is regenerated by
    hidebench.defenses.texthide_challenge."""
    if (read_manifest(challenge_dir).get("scheme") or {}).get("scheme") == "texthide":
        from hidebench.defenses.texthide_challenge import verify_text

        return verify_text(challenge_dir, progress=progress)

    def regenerate(manifest: dict, seed: int, fresh_dir: Path) -> None:
        ch = generate(recipe_from_dict(manifest["recipe"]), seed=seed, data_root=data_root, progress=progress)
        save_challenge(fresh_dir, ch.view, ch.key, ch.manifest, key_info=ch.key_info)

    return verify_regenerated(challenge_dir, regenerate)


def show(challenge_dir, out_png=None, *, n_private: int = 6, n_enc: int = 8) -> Path:
    """PNG grid: each row a private image, then encryptions made for it (|e| and e).

    The picture shows the key (private images, which encryptions hold them, their
    coefficients), so it goes under key/ by default (SHOW_PNG) and never beside the public files,
    where a publisher copying the release would take it along."""
    d = Path(challenge_dir)
    out = Path(out_png) if out_png is not None else d / SHOW_PNG
    inside = _relative(out, d)
    if inside is not None and not inside.startswith("key/"):
        raise HidebenchError(f"--out {out} lies in the public part of {d}: the picture shows the key; write it under "
                             f"{d / 'key'} or outside the challenge folder")
    if int(n_private) < 1:
        raise HidebenchError(f"--rows must be a positive integer, got {n_private!r}")
    if not out.parent.is_dir():
        raise HidebenchError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise HidebenchError(f"cannot write {out}: it is a folder")
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
                ax.set_title(f"enc {mine[c]}" + (f" λ={key.lambdas[mine[c], 0]:.2f}" if key.lambdas is not None else ""),
                             fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{Path(challenge_dir).name}: k={view.k} {view.mode}-dataset {view.scheme}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    if inside is not None:
        make_private(out)
    return out


SHOW_PNG = "key/show.png"


def _relative(path: Path, folder: Path) -> str | None:
    """path relative to folder (posix), or None when it lies outside it."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None
