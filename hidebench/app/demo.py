"""`hidebench demo`: the main job on the embedded default, with no data root.

Generates the `faces` challenge (scikit-image's LFW faces, k=6 cross-dataset InstaHide),
runs the `identity` baseline and the fusion-denoising attack (`fdn`: Carlini et al.'s grouping,
then Luo et al.'s fusion-denoising network on each group; its `demo` preset trains shorter so
the demo fits two minutes on 2 CPU cores) on it through the harness, prints both records'
challenge metric and writes demo.png (private | encryption | recovery).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hidebench.context import ExecutionContext

ATTACK = "fdn"      # the demo's attack: the strongest on this release within two minutes


def write_demo_png(path, originals, encryptions, recovered, match, ssims, *, n_show: int = 8, caption: str = "") -> Path:
    """A grid of private | encryption | recovery columns (two blocks side by side), images chosen
    evenly from best to worst match; each recovery's SSIM below it, `caption` under the grid.
    encryptions[i]: one encryption made for private image i (shown as released, in [-1, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = match[:, 0], match[:, 1]
    order = np.argsort(-ssims)
    pick = order[np.linspace(0, len(order) - 1, min(n_show, len(order))).round().astype(int)]
    blocks = 2 if len(pick) > 1 else 1
    per = -(-len(pick) // blocks)
    fig, axes = plt.subplots(per, 3 * blocks, figsize=(1.25 * 3 * blocks, 1.42 * per + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, m in enumerate(pick):
        r, c0 = i % per, 3 * (i // per)
        for j, img in enumerate((originals[cols[m]], encryptions[cols[m]], recovered[rows[m]])):
            axes[r, c0 + j].imshow(np.clip((img + 1) / 2, 0, 1))
        axes[r, c0 + 2].text(0.5, -0.08, f"SSIM {ssims[m]:.2f}", transform=axes[r, c0 + 2].transAxes,
                             ha="center", va="top", fontsize=7)
    for c0 in range(0, 3 * blocks, 3):
        for j, name in enumerate(("private", "encryption", "recovery")):
            axes[0, c0 + j].set_title(name, fontsize=8)
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def run_demo(out_dir="hidebench-demo", ctx: ExecutionContext | None = None) -> dict:
    """Run the demo into out_dir (challenge/, runs/identity, runs/fdn, demo.png); return the
    two run records by attack name."""
    from hidebench.app.harness import run_release_attack
    from hidebench.challenge_io import load_key, load_public
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.metrics import matched_set_metric
    from hidebench.recipes import load_recipe
    from hidebench.stock import load_preset
    from hidebench.threat import ReleaseThreatModel

    ctx = ctx or ExecutionContext()
    out = Path(out_dir)
    ch_dir = out / "challenge"
    t0 = time.perf_counter()
    recipe = load_recipe("faces")
    if not (ch_dir / "encryption.npy").is_file():
        print(f"generating the faces challenge in {ch_dir} ...")
        generate_to_dir(recipe, ch_dir, data_root=ctx.data_root, progress=ctx.progress)
    threat = ReleaseThreatModel()        # the recipe's aux data and public pool
    records = {"identity": run_release_attack("identity", ch_dir, out / "runs" / "identity", ctx=ctx)}
    print(f"running the fusion-denoising attack (aux {recipe.attacker.aux}, public pool {recipe.pool.source}) ...")
    records[ATTACK] = run_release_attack(ATTACK, ch_dir, out / "runs" / ATTACK, config=load_preset(ATTACK, "demo"),
                                         threat=threat, ctx=ctx.replace(cache_dir=out / "runs" / ATTACK / "cache"))
    key = load_key(ch_dir)
    view = load_public(ch_dir)
    recovered = np.load(out / "runs" / ATTACK / "recovered.npy")
    m = matched_set_metric(recovered, key.private)
    score = {name: r.metrics["challenge"]["Max_SSIM"] for name, r in records.items()}
    first = [int(np.flatnonzero(key.selection[:, 0] == i)[0]) for i in range(len(key.private))]
    png = write_demo_png(out / "demo.png", key.private, view.encryptions[first], recovered, m["match"],
                         m["per_image_ssim"],
                         caption=f"Fusion-denoising attack on the embedded faces release (k=6 cross-dataset InstaHide, "
                                 f"T=20): Max_SSIM {score[ATTACK]:.3f} (identity floor {score['identity']:.3f}); "
                                 "each recovery is the attack's image matched to the private one")
    for name, r in records.items():
        c = r.metrics["challenge"]
        print(f"{name:9s} Max_SSIM {c['Max_SSIM']:.4f}  Mean_SSIM {c['Mean_SSIM']:.4f}  Min_L2 {c['Min_L2']:.4f}  "
              f"Mean_L2 {c['Mean_L2']:.4f}  ({r.timings['total_s']:.1f} s)")
    print(f"private set (Hungarian-matched) SSIM {m['ssim']:.4f}; demo took {time.perf_counter() - t0:.1f}s; "
          f"wrote {png} and run records under {out / 'runs'}")
    return records
