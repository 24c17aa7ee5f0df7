"""The learned decoders against the floor, per scheme and k: a table and a plot.

Generates (or reuses) one CIFAR-10-test release per setting -- Mixup inside k=2, 4; InstaHide
inside k=2, 4; InstaHide cross k=4, 6 (the instahide2020 recipe with overrides) -- and runs
the floors identity and aux_mean (the prior alone), deep_decompose and gan_demask (InstaHide
only) with their default configs and no fusion (per-encryption quality), then prints
per-encryption Max_SSIM / Mean_SSIM, the demasker's sign accuracy, training time and inference
throughput, and writes OUT/results.csv, OUT/quality_vs_k.png.

    python benchmarks/bench_decoders.py --out bench-decoders [--n-priv 100 --T 2] [--device auto]
        [--data-root DIR] [--models DIR] [--settings mixup-inside-2,instahide-cross-6] [--steps N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

SETTINGS = {f"{s}-{m}-{k}": (s, m, k) for s, m, k in [
    ("mixup", "inside", 2), ("mixup", "inside", 4), ("instahide", "inside", 2), ("instahide", "inside", 4),
    ("instahide", "cross", 4), ("instahide", "cross", 6)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-priv", type=int, default=100)
    ap.add_argument("--T", type=int, default=2)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data-root")
    ap.add_argument("--models", help="model cache (default: OUT/models)")
    ap.add_argument("--steps", type=int, help="override training.steps of every network (default: the configs')")
    ap.add_argument("--replot", action="store_true", help="redraw OUT/quality_vs_k.png from OUT/results.csv; run nothing")
    args = ap.parse_args(argv)
    if args.replot:
        import pandas as pd

        plot(pd.read_csv(Path(args.out) / "results.csv"), Path(args.out))
        return

    import pandas as pd

    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe

    out = Path(args.out)
    ctx = ExecutionContext.from_env(device=args.device, threads=args.threads, data_root=args.data_root,
                                    model_dir=args.models or out / "models", progress=True)
    rows = []
    for name in args.settings.split(","):
        scheme, mode, k = SETTINGS[name]
        ch = out / "challenges" / name
        if not (ch / "manifest.json").exists():
            generate_to_dir(load_recipe("instahide2020", {"scheme": scheme, "mode": mode, "k": k, "n_priv": args.n_priv,
                                                          "T": args.T}), ch, seed=1, data_root=ctx.data_root)
        for attack in ("identity", "aux_mean", "deep_decompose", "gan_demask"):
            if attack == "gan_demask" and scheme == "mixup":
                continue
            training = {"training": {"steps": args.steps}} if args.steps else {}
            cfg = {}
            if attack == "deep_decompose":
                cfg = {"fuse": "none", **training}
            elif attack == "gan_demask":
                cfg = {"decompose": {"fuse": "none", **training}, **training}
            rec = run_release_attack(attack, ch, out / "runs" / name / attack, config=cfg, ctx=ctx.replace(cache_dir=None))
            c, st, s, t = rec.metrics["challenge"], rec.metrics.get("stages", {}), rec.stats, rec.timings
            models = [s] if "curves" in s else [s[m] for m in ("demasker", "decomposer") if m in s]
            rows.append({"setting": name, "scheme": scheme, "mode": mode, "k": k, "attack": attack,
                         "Max_SSIM": c["Max_SSIM"], "Mean_SSIM": c["Mean_SSIM"], "Min_L2": c["Min_L2"],
                         "sign_accuracy": st.get("sign_accuracy"), "mixture_ssim": st.get("mixture_ssim"),
                         "train_s": sum(v for key, v in t.items() if key.startswith("train") and key.endswith("_s")),
                         "models_cached": [m["cached"] for m in models],
                         "throughput_enc_s": min((m["inference_throughput"] for m in models), default=None),
                         "device": rec.context["device"]})
    df = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.drop(columns=["models_cached"]).round(3).to_string(index=False))
    plot(df, out)
    print(f"wrote {out / 'results.csv'} and {out / 'quality_vs_k.png'}")


ATTACK_COLOURS = {"identity": "C3", "aux_mean": "C0", "deep_decompose": "C1", "gan_demask": "C2"}


def plot(df, out: Path) -> None:
    """OUT/quality_vs_k.png: per-encryption Max_SSIM against k, one panel per scheme and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, (label, (scheme, mode)) in zip(axes, {"Mixup inside": ("mixup", "inside"),
                                                  "InstaHide inside": ("instahide", "inside"),
                                                  "InstaHide cross": ("instahide", "cross")}.items()):
        d = df[(df.scheme == scheme) & (df["mode"] == mode)]
        for attack, g in d.groupby("attack"):
            ax.plot(g.k, g.Max_SSIM, "o-", label=attack, color=ATTACK_COLOURS.get(attack))
        ax.set_xticks(sorted(d.k.unique()))
        ax.set_title(label)
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("per-encryption Max_SSIM")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_k.png", dpi=120)


if __name__ == "__main__":
    main()
