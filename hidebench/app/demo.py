"""`hidebench demo`: the main job on the embedded default, with no data root.

Generates the `faces` challenge (scikit-image's LFW faces, k=6 cross-dataset InstaHide),
runs the `identity` baseline and the Carlini et al. attack on it through the harness, prints
both records' challenge metric and writes demo.png (private images above their recoveries).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hidebench.context import ExecutionContext


def write_demo_png(path, originals, recovered, match, ssims, *, n_show: int = 12, title: str = "") -> Path:
    """Originals (top row) above their Hungarian-matched recoveries (bottom row), best to worst."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = match[:, 0], match[:, 1]
    order = np.argsort(-ssims)
    pick = order[np.linspace(0, len(order) - 1, min(n_show, len(order))).round().astype(int)]
    fig, axes = plt.subplots(2, len(pick), figsize=(1.1 * len(pick), 2.6), squeeze=False)
    for i, m in enumerate(pick):
        axes[0, i].imshow(np.clip((originals[cols[m]] + 1) / 2, 0, 1))
        axes[1, i].imshow(np.clip((recovered[rows[m]] + 1) / 2, 0, 1))
        axes[1, i].set_title(f"{ssims[m]:.2f}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].set_title("private", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def run_demo(out_dir="hidebench-demo", ctx: ExecutionContext | None = None) -> dict:
    """Run the demo into out_dir (challenge/, runs/identity, runs/carlini, demo.png); return the
    two run records by attack name."""
    from hidebench.app.harness import run_release_attack
    from hidebench.attacks.carlini import DEMO_CONFIG
    from hidebench.challenge_io import load_key
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.metrics import matched_set_metric
    from hidebench.recipes import load_recipe
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
    print(f"running the Carlini attack (aux {recipe.attacker.aux}, public pool {recipe.pool.source}) ...")
    records["carlini"] = run_release_attack("carlini", ch_dir, out / "runs" / "carlini", config=DEMO_CONFIG,
                                            threat=threat, ctx=ctx.replace(cache_dir=out / "runs" / "carlini" / "cache"))
    key = load_key(ch_dir)
    recovered = np.load(out / "runs" / "carlini" / "recovered.npy")
    m = matched_set_metric(recovered, key.private)
    score = {name: r.metrics["challenge"]["Max_SSIM"] for name, r in records.items()}
    png = write_demo_png(out / "demo.png", key.private, recovered, m["match"], m["per_image_ssim"],
                         title=f"faces demo: Max_SSIM {score['carlini']:.3f} (identity {score['identity']:.3f}); "
                               "top: private, bottom: Carlini recoveries (SSIM)")
    for name, r in records.items():
        c = r.metrics["challenge"]
        print(f"{name:9s} Max_SSIM {c['Max_SSIM']:.4f}  Mean_SSIM {c['Mean_SSIM']:.4f}  Min_L2 {c['Min_L2']:.4f}  "
              f"Mean_L2 {c['Mean_L2']:.4f}  ({r.timings['total_s']:.1f} s)")
    print(f"private set (Hungarian-matched) SSIM {m['ssim']:.4f}; demo took {time.perf_counter() - t0:.1f}s; "
          f"wrote {png} and run records under {out / 'runs'}")
    return records
