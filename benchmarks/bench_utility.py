"""Utility at an equal budget: what InstaHide and Mixup cost in accuracy, with the fast recipe.

Issue 33. The InstaHide paper (Huang et al. 2020, Table 2) reports CIFAR-10 test accuracy 94.8%
vanilla, 92.3% InstaHide inside k=4 and 90.3% cross k=6 (ResNet-18, 200 epochs). This benchmark
trains, at the same epochs and steps for every setting (the same training set, batch size and
schedule), the default fast model (an airbench reimplementation, hidebench.defenses.utility.fast)
on: vanilla, Mixup inside k=4, InstaHide inside k=2/4/6 and cross k=4/6, each with several
seeds, fresh augmentation and encryptions every epoch, tested on clean test images and on
encrypted ones (K encryptions averaged, the authors' advice). Then the budget curve: vanilla and
InstaHide inside k=4 trained for each epoch budget in --curve-epochs (each budget its own run
with its own schedule). Optionally (--resnet18-authors) ResNet-18 in the authors' setting (SGD
lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, lr / 10 at 50% and 75% of the epochs) for
vanilla and InstaHide inside k=4, with the device recorded beside the accuracy.

Every run is `hidebench.app.utility.run_utility` (the `hidebench utility` library call) writing
OUT/runs/NAME/record.json (and its resumable checkpoint); a rerun reuses finished records. The
script prints a table (mean +- standard deviation over seeds) and writes OUT/runs.csv (one row
per run), OUT/summary.csv, OUT/budget_curve.png and OUT/table.md. With --privacy (sweeps that
attacked each setting, e.g. the stock `instahide2020-frontier` and `mixup2020-frontier`, or single
attack runs) it also draws the privacy/utility frontier, OUT/frontier.png and OUT/frontier.csv:
each setting's comparison accuracy (mean over seeds) against the best Max_SSIM any attack without oracles
reached on a release of that setting (the sweeps' own frontier rule, sweep_report.frontier).

    python benchmarks/bench_utility.py --out bench-utility --quick            # CPU smoke run, minutes
    python benchmarks/bench_utility.py --out bench-utility --device cuda --jobs 6 --resnet18-authors
    python benchmarks/bench_utility.py --out bench-utility --replot           # table and figure from records

--jobs N trains N runs at a time in worker processes (on one GPU the small model leaves most of
it idle; the numpy batch pipeline runs on the host, one thread per run, ahead of the model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

SETTINGS = {"vanilla": None,
            "mixup-inside-k4": {"scheme": "mixup", "mode": "inside", "k": 4},
            **{f"instahide-inside-k{k}": {"scheme": "instahide", "mode": "inside", "k": k} for k in (2, 4, 6)},
            **{f"instahide-cross-k{k}": {"scheme": "instahide", "mode": "cross", "k": k} for k in (4, 6)}}
CURVE_SETTINGS = ("vanilla", "instahide-inside-k4")
GROUPS = ["comparison", "budget", "resnet18-authors"]
AUTHORS = {"model": "resnet18", "schedule": "step", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 128,
           "warmup_epochs": 0, "label_smoothing": 0.0, "lookahead": False, "tta": 0, "flip": "random", "translate": 4}
PAPER = {"vanilla": 0.948, "instahide-inside-k4": 0.923, "instahide-cross-k6": 0.903}   # Huang et al. 2020, Table 2
QUICK = {"train": "cifar10:train[::50]", "test": "cifar10:test[::20]", "epochs": 2, "widths": [16, 32, 32], "K": 2,
         "whiten_images": 500}

_LOADED: dict = {}          # per worker process: data sources and pools read once


def plan(args) -> list[dict]:
    """The runs: the comparison (every setting x seed at --epochs), the budget curve (CURVE_SETTINGS
    x --curve-epochs, the first seed; the comparison's run reused where the budget matches) and
    the ResNet-18 rows. Each: name, group, setting, seed, config (utility keys set explicitly)."""
    base = dict(QUICK) if args.quick else {}
    for key in ("train", "test", "epochs", "batch_size", "K", "precision"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.widths:
        base["widths"] = [int(w) for w in args.widths.split(",")]
    from hidebench.defenses.utility.config import MODEL_DEFAULTS

    base.setdefault("epochs", MODEL_DEFAULTS["fast"]["epochs"])
    settings = args.settings.split(",") if args.settings else list(SETTINGS)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}

    def add(group, setting, seed, cfg):
        model = cfg.get("model", "fast") + ("-" + "x".join(map(str, cfg["widths"])) if "widths" in cfg else "")
        name = f"{setting}-{model}-e{cfg['epochs']}-s{seed}"
        runs.setdefault(name, {"name": name, "groups": [], "setting": setting, "seed": seed, "config": cfg})
        runs[name]["groups"].append(group)

    for setting in settings:
        for seed in seeds:
            add("comparison", setting, seed, dict(base))
    curve = [int(e) for e in args.curve_epochs.split(",")] if args.curve_epochs else ([1, 2] if args.quick else [])
    for setting in CURVE_SETTINGS:
        for e in curve:
            add("budget", setting, seeds[0], {**base, "epochs": e})
    if args.resnet18_authors:
        r18 = {**AUTHORS, "epochs": args.resnet18_epochs or (1 if args.quick else 30), "K": base.get("K", 10)}
        for key in ("train", "test", "precision"):
            if key in base:
                r18[key] = base[key]
        for setting in CURVE_SETTINGS:
            add("resnet18-authors", setting, seeds[0], r18)
    return list(runs.values())


def _finished(run: dict, out: Path) -> dict | None:
    path = out / "runs" / run["name"] / "record.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    same = rec.get("seed") == run["seed"] and all(rec["config"].get(k) == v for k, v in run["config"].items())
    return rec if same else None


def execute(run: dict, out: str, device: str, threads: int, data_root: str | None) -> dict:
    """One run through the library (the record is written by run_utility); returns its row."""
    from hidebench.app.utility import run_utility
    from hidebench.context import ExecutionContext
    from hidebench.defenses.utility.config import UtilityConfig
    from hidebench.recipes import load_recipe

    out = Path(out)
    rec = _finished(run, out)
    if rec is None:
        over = SETTINGS[run["setting"]] or {}
        recipe = load_recipe("instahide2020", dict(over))
        ctx = ExecutionContext.from_env(device=device, threads=threads, data_root=data_root, progress=False,
                                        seed=run["seed"])
        rec = run_utility(recipe, out / "runs" / run["name"], UtilityConfig.from_dict(run["config"]),
                          vanilla=over == {}, ctx=ctx, loaded=_LOADED).to_dict()
    return row(run, rec)


def row(run: dict, rec: dict) -> dict:
    c, m, t = rec["config"], rec["metrics"], rec["timings"]
    return {"name": run["name"], "groups": "+".join(run["groups"]), "setting": run["setting"], "seed": run["seed"],
            "model": c["model"], "epochs": c["epochs"], "steps": rec["stats"].get("steps"), "batch_size": c["batch_size"],
            "n_train": rec["setting"]["n_train"], "n_test": rec["setting"]["n_test"], "K": c["K"],
            "accuracy_clean": m["test_accuracy_clean"], "accuracy_encrypted": m["test_accuracy_encrypted"],
            "curve_clean": json.dumps(rec["stats"]["curves"]["test_accuracy_clean"]),
            "train_s": round(t["train_s"], 1), "total_s": round(t["total_s"], 1), "peak_memory_mb": rec["peak_memory_mb"],
            "device": rec["context"]["device"], "machine": rec["context"].get("machine", "")}


def summarise(runs):
    """Mean and standard deviation (ddof 1) over seeds, per group, setting, model and budget."""
    long = runs.assign(groups=runs["groups"].str.split("+")).explode("groups")
    g = long.groupby(["groups", "setting", "model", "epochs", "steps", "device", "machine"], sort=False)
    out = g.agg(n=("seed", "size"), clean_mean=("accuracy_clean", "mean"), clean_sd=("accuracy_clean", "std"),
                encrypted_mean=("accuracy_encrypted", "mean"), encrypted_sd=("accuracy_encrypted", "std"),
                train_s=("train_s", "mean")).reset_index().rename(columns={"groups": "group"})
    rank = {"group": GROUPS.index, "setting": list(SETTINGS).index}
    return out.sort_values(["group", "setting", "epochs"], key=lambda col: col.map(rank[col.name]) if col.name in rank
                           else col, kind="stable").reset_index(drop=True)


def budget_curve(summary):
    """The budget curve's points, one per curve setting and epoch budget, by epochs: the budget
    group's run (the first seed) where there is one, else the comparison's mean."""
    cur = summary[summary["group"].isin(["budget", "comparison"]) & summary["setting"].isin(CURVE_SETTINGS)
                  & (summary["model"] == "fast")]
    cur = cur.sort_values("group", key=lambda g: g != "budget", kind="stable")
    return cur.drop_duplicates(["setting", "epochs"]).sort_values("epochs", kind="stable")


def _pair(clean: float, encrypted: float) -> str:
    """'clean / encrypted' to 3 decimals; the clean figure alone where there is no encrypted one."""
    return f"{clean:.3f}" + ("" if encrypted != encrypted else f" / {encrypted:.3f}")


def markdown(summary, front: list[dict], command: str) -> str:
    """OUT/table.md: the comparison and the ResNet-18 rows (mean +- sd over seeds, the cost against
    vanilla at the same budget beside the authors'), the budget curve and the frontier's points,
    with the machine and the command; the README includes it as it is (render_results.py)."""
    def pm(mean, sd):
        return "-" if mean != mean else f"{mean:.4f}" + (f" ± {sd:.4f}" if sd == sd else "")

    lines = ["| setting | model, epochs | seeds | clean test | encrypted test (K averaged) | cost vs vanilla, clean "
             "(points) | authors' cost (points) | training s |", "|---|---|---|---|---|---|---|---|"]
    for _, comp in summary[summary["group"] != "budget"].groupby(["group", "model", "epochs"], sort=False):
        base = comp[comp["setting"] == "vanilla"]["clean_mean"]
        v = float(base.iloc[0]) if len(base) else float("nan")
        for r in comp.itertuples():
            paper = PAPER.get(r.setting)
            ours = "" if r.setting == "vanilla" or v != v else f"{100 * (v - r.clean_mean):.1f}"
            theirs = "" if paper is None or r.setting == "vanilla" else f"{100 * (PAPER['vanilla'] - paper):.1f}"
            lines.append(f"| {r.setting} | {r.model}, {r.epochs} | {r.n} | {pm(r.clean_mean, r.clean_sd)} | "
                         f"{pm(r.encrypted_mean, r.encrypted_sd)} | {ours} | {theirs} | {r.train_s:.0f} |")
    curve = budget_curve(summary)
    if curve["epochs"].nunique() > 1:
        epochs = sorted(curve["epochs"].unique())
        lines += ["", "| budget curve (first seed), clean / encrypted | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
                  "|---|" + "---|" * len(epochs)]
        for setting in CURVE_SETTINGS:
            d = curve[curve["setting"] == setting].set_index("epochs")
            cells = [_pair(d.loc[e, "clean_mean"], d.loc[e, "encrypted_mean"]) if e in d.index else "" for e in epochs]
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    if front:
        lines += ["", "| frontier point | accuracy, clean / encrypted | best attack without oracles | its Max_SSIM |",
                  "|---|---|---|---|"]
        for f in front:
            lines.append(f"| {f['defense']} | {_pair(f['accuracy'], f['accuracy_encrypted'])} | {f['best_attack'] or '-'} | "
                         f"{f['best_Max_SSIM']:.3f} |")
    machines = sorted({f"{m} ({d})" for m, d in zip(summary["machine"], summary["device"])})
    lines += ["", f"Measured on {', '.join(machines)}, {time.strftime('%Y-%m-%d')}: `{command}`"]
    return "\n".join(lines) + "\n"


def budget_figure(summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cur = budget_curve(summary)
    for (setting, colour) in zip(CURVE_SETTINGS, ("k", "C3")):
        d = cur[cur["setting"] == setting]
        if d.empty:
            continue
        ax.plot(d["epochs"], d["clean_mean"], "o-", color=colour, label=f"{setting}: clean test images")
        if d["encrypted_mean"].notna().any():
            ax.plot(d["epochs"], d["encrypted_mean"], "s--", color=colour, mfc="none",
                    label=f"{setting}: encrypted test (K averaged)")
        if setting in PAPER:
            ax.axhline(PAPER[setting], color=colour, ls=":", lw=0.8)
    epochs = sorted(cur["epochs"].unique())
    if epochs:
        ax.set_xscale("log", base=2)
        ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("epochs (training budget; each point its own run and schedule)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.set_title("fast model: accuracy against budget (dotted: paper, ResNet-18 200 epochs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _record_row(path: str) -> dict:
    """One attack's run record as a row of a sweep's results table (the columns the frontier reads)."""
    from hidebench.app.sweep_results import record_row
    from hidebench.record import load_record

    r = record_row(load_record(path))
    return {"status": "done", "label": r["attack"], "Max_SSIM": r["challenge.Max_SSIM"],
            **{k: r[k] for k in ("scheme", "mode", "k", "T", "n_priv", "oracles")}}


def frontier_rows(summary, privacy: list[str]) -> list[dict]:
    """The frontier's points: the comparison group's settings (accuracy averaged over seeds) beside
    the best attack without oracles on each, from the sweeps' results.csv files and the attacks'
    record.json files in `privacy`."""
    import pandas as pd

    from hidebench.app.sweep_report import frontier

    done = pd.concat([pd.read_csv(p) if p.endswith(".csv") else pd.DataFrame([_record_row(p)]) for p in privacy],
                     ignore_index=True)
    done = done[done["status"] == "done"]
    comp = summary[(summary["group"] == "comparison") & (summary["model"] == "fast")]
    util = pd.DataFrame([{**(SETTINGS[r.setting] or {"scheme": "none", "mode": "", "k": 0}),
                          "test_accuracy_clean": r.clean_mean, "test_accuracy_encrypted": r.encrypted_mean,
                          "epochs": r.epochs, "time_s": r.train_s, "run_id": r.setting} for r in comp.itertuples()])
    return frontier(done, util, []) if not util.empty else []


def report(rows: list[dict], out: Path, privacy: list[str] | None = None, command: str = "") -> None:
    import pandas as pd

    runs = pd.DataFrame(rows).sort_values(["groups", "setting", "model", "epochs", "seed"]).reset_index(drop=True)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarise(runs)
    summary.to_csv(out / "summary.csv", index=False)
    budget_figure(summary, out / "budget_curve.png")
    print(f"wrote {out / 'runs.csv'}, {out / 'summary.csv'}, {out / 'budget_curve.png'}")
    front = frontier_rows(summary, privacy) if privacy else []
    if front:
        from hidebench.app.sweep_figures import frontier_figure

        pd.DataFrame(front).to_csv(out / "frontier.csv", index=False)
        (out / "frontier.png").write_bytes(frontier_figure(front))
        print(f"wrote {out / 'frontier.csv'}, {out / 'frontier.png'}")
    text = markdown(summary, front, command)
    (out / "table.md").write_text(text)
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (runs/NAME/record.json, runs.csv, summary.csv, budget_curve.png)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (default: torch's)")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at a time, each in its own process (default 1)")
    ap.add_argument("--data-root", help="data root (default: $HIDEBENCH_DATA)")
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke run: 1,000 training / 500 test images, 2 epochs, widths 16/32/32, K=2, one seed")
    ap.add_argument("--settings", help=f"comma-separated subset of: {', '.join(SETTINGS)} (default all)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    ap.add_argument("--epochs", type=int, help="epochs of every comparison run (default: the fast model's, 10)")
    ap.add_argument("--curve-epochs", help="epoch budgets of the budget curve, e.g. 1,2,4,8,16 (default none; --quick 1,2)")
    ap.add_argument("--widths", help="the fast net's widths, e.g. 64,128,128 (airbench93; default the model's, 64,256,256)")
    ap.add_argument("--batch-size", type=int, help="batch size (default: the model's)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], help="autocast precision (default: the model's)")
    ap.add_argument("--K", type=int, help="encryptions averaged per test image (default 10)")
    ap.add_argument("--train", help="training source (default cifar10:train)")
    ap.add_argument("--test", help="test source (default cifar10:test)")
    ap.add_argument("--resnet18-authors", action="store_true",
                    help="also ResNet-18 in the authors' setting (SGD 0.1, step decay) for vanilla and InstaHide inside k=4")
    ap.add_argument("--resnet18-epochs", type=int, help="epochs of the ResNet-18 runs (default 30; the authors' 200)")
    ap.add_argument("--privacy", action="append", metavar="PATH",
                    help="a sweep folder (its results.csv) or an attack's run folder (its record.json) with attacks "
                         "on the settings, repeatable: also draw the frontier")
    ap.add_argument("--replot", action="store_true", help="table and figure from the finished records; train nothing")
    ap.add_argument("--list", action="store_true", help="print the planned runs (finished ones marked) and exit")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or ("0" if args.quick else "0,1,2")
    args.privacy = [str(next((Path(p) / f for f in ("results.csv", "record.json") if (Path(p) / f).is_file()), p))
                    for p in args.privacy or []]
    bad = [p for p in args.privacy if not (Path(p).is_file() and Path(p).name.endswith((".csv", ".json")))]
    if bad:
        ap.error(f"--privacy: no results.csv or record.json at {', '.join(bad)} (a sweep folder or an attack's run folder)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_utility.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--replot")
    runs = plan(args)
    if args.list:
        for r in runs:
            print(f"{'done' if _finished(r, out) else '    '}  {r['name']:40} {'+'.join(r['groups']):28} {r['config']}")
        return print(f"{len(runs)} runs")
    if args.replot:
        rows = [row(r, rec) for r in runs if (rec := _finished(r, out)) is not None]
        return report(rows, out, args.privacy, command)
    data_root = args.data_root or os.environ.get("HIDEBENCH_DATA")
    t0 = time.perf_counter()
    rows = []
    print(f"{len(runs)} runs on {args.device}, {args.jobs} at a time")
    if args.jobs <= 1:
        for r in runs:
            rows.append(execute(r, str(out), args.device, args.threads, data_root))
            print(f"  {r['name']}: clean {rows[-1]['accuracy_clean']:.4f} ({rows[-1]['total_s']:.0f} s)", flush=True)
    else:
        # the longest runs first, so that the pool ends together
        order = sorted(runs, key=lambda r: -r["config"]["epochs"] * (4 if r["config"].get("model") == "resnet18" else 1))
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(execute, r, str(out), args.device, args.threads, data_root): r for r in order}
            for f in as_completed(futures):
                rows.append(f.result())
                print(f"  {futures[f]['name']}: clean {rows[-1]['accuracy_clean']:.4f} ({rows[-1]['total_s']:.0f} s)",
                      flush=True)
    print(f"all runs in {time.perf_counter() - t0:.0f} s")
    report(rows, out, args.privacy, command)


if __name__ == "__main__":
    main()
