"""The report of a sweep: REPORT/index.html (the jinja2 template templates/sweep_report.html),
with every figure beside it as a PNG and every table as a CSV, so they can go into a paper.

Rendered from the sweep folder only: its plan (sweep.json), the run records (through
`results_table`, the rows of results.csv) and, for the reconstruction galleries, each run's
decryption.npy / recovered.npy and its challenge's key. Nothing is recomputed but the
per-encryption SSIMs that order a gallery. A partly finished sweep gives a partial report that
lists what is missing (runs not run yet, started but not finished, failed with their error,
infeasible cells with the reason).

Sections: quality (Max_SSIM, and Mean_SSIM / Min_L2 / Mean_L2 on demand, against each swept
parameter, mean over seeds with the seeds' range), scaling (wall time and peak memory against the
number of encryptions on log-log axes, per attack and per stage, with the fitted exponent and its
95% confidence interval), reconstructions (private | encryption | decryption for the best,
median and worst encryption, and the Hungarian-matched private-set grid), leaderboard (attacks
by Max_SSIM per setting, with the threat model and oracles of every row, the test accuracy of
the setting when the sweep trained on it, and the published InstaHide Challenge figures beside
ours where the setting is the challenge's), utility (with a `[utility]` section: test accuracy per
defense setting and the privacy/utility frontier, accuracy against the best attack's Max_SSIM).
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from hidebench.app.report import write_files
from hidebench.app.sweep_results import METRICS, SweepManifest, read_sweep_manifest, results_table
from hidebench.challenge_io import check_out_dir
from hidebench.types import HidebenchError

# The InstaHide Challenge leaderboard (github.com/Hazelsuko07/InstaHide_Challenge, entries of
# 2020-12-04) for the attack of Carlini et al., "Is Private Learning Possible with Instance
# Encoding?" (IEEE S&P 2021, arXiv:2011.05315), on the challenge release: 100 private CIFAR-10
# images, T=50, k=6 cross-dataset InstaHide with ImageNet patches.
ANCHOR_SOURCE = ('InstaHide Challenge leaderboard (github.com/Hazelsuko07/InstaHide_Challenge, 2020-12-04); '
                 'N. Carlini et al., "Is Private Learning Possible with Instance Encoding?", IEEE S&P 2021, '
                 'arXiv:2011.05315')
ANCHOR_SETTING = {"scheme": "instahide", "mode": "cross", "k": 6, "T": 50, "n_priv": 100}
ANCHOR_PRIVATE = "cifar10:test"
ANCHORS = (
    {"label": "Carlini et al. ver.1 (published)", "Max_SSIM": 0.90, "Mean_SSIM": 0.43, "Min_L2": 0.01, "Mean_L2": 0.31,
     "threat": "the public release (encryptions, labels)", "oracles": "none",
     "time": "2 GPU h + 2 CPU h (+10 GPU h preparation), self-reported"},
    {"label": "Carlini et al. ver.2 (published)", "Max_SSIM": 0.79, "Mean_SSIM": 0.37, "Min_L2": 0.05, "Mean_L2": 0.42,
     "threat": "the public release (encryptions, labels)", "oracles": "none",
     "time": "2 GPU h + 2 CPU h (+10 GPU h preparation), self-reported"},
)
SWEPT_ORDER = ("n_priv", "T", "k")
# Grid keys that change the defense (and so its utility run), beside scheme, mode and k.
DEFENSE_KEYS = ("c1", "c2", "pool_source", "min_keypoints", "pool_screen")
MAX_LINES = 4           # other-parameter combinations drawn as their own lines before averaging over them


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- fits

def fit_loglog(x, y, level: float = 0.95) -> dict | None:
    """Least-squares slope of log y on log x (the scaling exponent) with its confidence interval
    (Student t, n - 2 degrees of freedom; None with fewer than 3 points). None if x takes fewer
    than two distinct values."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        return None
    r = stats.linregress(np.log(x), np.log(y))
    dof = len(x) - 2
    ci = None
    if dof >= 1 and np.isfinite(r.stderr):
        half = float(stats.t.ppf(0.5 + level / 2, dof) * r.stderr)
        ci = (float(r.slope) - half, float(r.slope) + half)
    return {"exponent": float(r.slope), "intercept": float(r.intercept), "ci": ci, "n": int(len(x)),
            "sizes": int(len(np.unique(x)))}


def _fit_text(f: dict | None) -> str:
    if f is None:
        return "n/a"
    ci = f"[{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]" if f["ci"] else "(no CI: 2 points)"
    return f"{f['exponent']:.2f} {ci}"


def _stages(d, suffix: str, nested: bool = False) -> list[str]:
    """Stage columns time.STAGE{suffix} with values in d: top-level stages, and with `nested`
    also their steps (grouping.clustering, regression.adam, ...)."""
    out = []
    for c in d.columns:
        if c.startswith("time.") and c.endswith(suffix):
            stage = c[len("time."):-len(suffix)]
            if stage and (nested or "." not in stage) and stage not in ("total", "peak") and d[c].notna().any():
                out.append(stage)
    return out


def scaling_fits(done) -> list[dict]:
    """Exponents of time (total, per stage and per step of a stage) and peak memory (likewise)
    against the number of encryptions, per attack label."""
    fits = []
    for label, g in done.groupby("label", sort=False):
        x = g["n_encryptions"].astype(float)
        series = [("time", "total", g["time_s"])]
        series += [("time", s, g[f"time.{s}_s"]) for s in _stages(g, "_s", nested=True)]
        series += [("memory", "total", g["peak_memory_mb"])]
        series += [("memory", s, g[f"time.{s}_peak_rss_mb"]) for s in _stages(g, "_peak_rss_mb", nested=True)]
        for what, stage, y in series:
            f = fit_loglog(x, y.astype(float))
            if f is not None:
                fits.append({"label": label, "quantity": what, "stage": stage, **f})
    return fits


# ----------------------------------------------------------------------------- figures

def _swept(manifest: SweepManifest, done) -> list[str]:
    """The grid keys that take two or more values among the finished runs (n_priv, T, k first)."""
    grid = manifest.sweep["grid"]
    keys = [k for k in manifest.grid_keys if len(grid[k]) > 1 and k in done and done[k].astype(str).nunique() > 1]
    return sorted(keys, key=lambda k: (SWEPT_ORDER.index(k) if k in SWEPT_ORDER else len(SWEPT_ORDER), keys.index(k)))


def _is_num(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _series(g, p: str, metric: str):
    """metric against p: mean over seeds of the per-seed mean (over whatever else varies), and
    the seeds' range."""
    per_seed = g.groupby([p, "seed"])[metric].mean().reset_index()
    return per_seed.groupby(p)[metric].agg(["mean", "min", "max"]).reset_index()


def quality_figure(done, swept: list[str], metric: str, labels: list[str]) -> tuple[bytes, list[str]]:
    """One column per swept parameter. Top row: every attack, averaged over the other swept
    parameters. Then one row per attack (when other parameters vary): a line per combination of
    the other parameters, while there are at most MAX_LINES. Points: mean over seeds; bars: the
    seeds' range."""
    plt = _plt()
    notes = []
    others_vary = len(swept) > 1
    rows = 1 + (len(labels) if others_vary else 0)
    fig, axes = plt.subplots(rows, len(swept), figsize=(3.9 * len(swept), 2.9 * rows), squeeze=False)
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    styles = ["-", "--", ":", "-."]

    def draw(ax, g, p, pos, **kw):
        agg = _series(g, p, metric)
        if not agg.empty:
            ax.errorbar([pos[v] for v in agg[p]], agg["mean"], yerr=[agg["mean"] - agg["min"], agg["max"] - agg["mean"]],
                        marker="o", ms=4, capsize=3, **kw)

    for col, p in enumerate(swept):
        others = [q for q in swept if q != p]
        values = sorted(done[p].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
        numeric = _is_num(values)
        pos = {v: (v if numeric else i) for i, v in enumerate(values)}
        ax = axes[0, col]
        for lab in labels:
            draw(ax, done[done["label"] == lab], p, pos, color=colours[lab], label=lab)
        ax.set_title(f"all attacks{' (averaged over ' + ', '.join(others) + ')' if others else ''}", fontsize=8)
        for row, lab in enumerate(labels, 1) if others_vary else ():
            ax = axes[row, col]
            g = done[done["label"] == lab]
            combos = list(g.groupby(others, sort=True))
            if len(combos) > MAX_LINES:
                draw(ax, g, p, pos, color=colours[lab], label=f"mean over {len(combos)} settings")
                notes.append(f"{metric} of {lab} against {p}: averaged over {', '.join(others)} "
                             f"({len(combos)} combinations)")
            else:
                for j, (key, gg) in enumerate(combos):
                    key = key if isinstance(key, tuple) else (key,)
                    draw(ax, gg, p, pos, color=f"C{j % 10}", linestyle=styles[j % len(styles)],
                         label=", ".join(f"{q}={v}" for q, v in zip(others, key)))
            ax.set_title(lab, fontsize=8)
        for ax in axes[:, col]:
            ax.set_xlabel(p, fontsize=8)
            ax.set_ylabel(metric, fontsize=8)
            if numeric:
                ax.set_xticks(values, [f"{v:g}" for v in values])
            else:
                ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
    fig.suptitle(f"{metric} against the swept parameters (mean over seeds; bars: range over seeds)", fontsize=9)
    return _png(fig), notes


def quality_bars(done, metric: str, labels: list[str]) -> bytes:
    """Nothing swept: one bar per attack (mean over seeds, bars: range)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(labels) + 1.5), 3))
    g = done.groupby("label")[metric].agg(["mean", "min", "max"]).reindex(labels)
    ax.bar(range(len(labels)), g["mean"], yerr=[g["mean"] - g["min"], g["max"] - g["mean"]], capsize=3,
           color=[f"C{i % 10}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(metric)
    return _png(fig)


def scaling_figure(done, labels: list[str], quantity: str, fits: list[dict]) -> bytes:
    """Per attack (one panel each): time or peak memory against encryptions, log-log, total and
    per stage, with the fitted power law."""
    plt = _plt()
    n = len(labels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, lab in zip(axes.ravel(), labels):
        g = done[done["label"] == lab]
        x = g["n_encryptions"].astype(float)
        if quantity == "time":
            series = [("total", g["time_s"])] + [(s, g[f"time.{s}_s"]) for s in _stages(g, "_s")]
        else:
            series = [("total", g["peak_memory_mb"])] + [(s, g[f"time.{s}_peak_rss_mb"])
                                                          for s in _stages(g, "_peak_rss_mb")]
        for i, (stage, y) in enumerate(series):
            y = y.astype(float)
            ok = (x > 0) & (y > 0)
            if not ok.any():
                continue
            f = next((f for f in fits if f["label"] == lab and f["quantity"] == quantity and f["stage"] == stage), None)
            colour = "k" if stage == "total" else f"C{i % 10}"
            ax.scatter(x[ok], y[ok], s=14, color=colour, alpha=0.8,
                       label=f"{stage}: n^{_fit_text(f)}" if f else f"{stage}")
            if f:
                xs = np.geomspace(x[ok].min(), x[ok].max(), 20)
                ax.plot(xs, np.exp(f["intercept"]) * xs ** f["exponent"], color=colour, lw=1.2 if stage == "total" else 0.8)
        _log_axes(ax, sorted(x[x > 0].unique()))
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("encryptions (n_priv x T)")
        ax.set_ylabel("seconds" if quantity == "time" else "peak RSS (MB)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    what = "wall time" if quantity == "time" else "peak memory"
    fig.suptitle(f"{what} against the number of encryptions\n(log-log; exponent [95% CI])", fontsize=9)
    return _png(fig)


def _defense_keys(extra: list[str]) -> list[str]:
    return ["scheme", "mode", "k", *[e for e in extra if e in DEFENSE_KEYS or e.startswith("pool.")]]


def _defense_text(row, keys: list[str]) -> str:
    if row["scheme"] == "none":
        return "vanilla (no defense)"
    return f"{row['scheme']} {row['mode']} k={row['k']}" + "".join(f", {k}={row[k]}" for k in keys[3:])


def frontier(done, util, extra: list[str]) -> list[dict]:
    """Per utility run: its test accuracies and the best attack's Max_SSIM on that defense setting
    (the highest mean-over-seeds Max_SSIM of any attack without oracles, over the setting's cells,
    i.e. the release of that defense the attacker fared best on); the vanilla reference at Max_SSIM
    1 (an undefended release shows the images themselves)."""
    keys = _defense_keys(extra)
    attacks = done[done["oracles"] == "none"]
    best = {}
    if not attacks.empty:
        per = attacks.groupby([*keys, "T", "n_priv", "label"], dropna=False)["Max_SSIM"].mean().reset_index()
        for key, g in per.groupby(keys, dropna=False):
            i = g["Max_SSIM"].idxmax()
            best[tuple(map(str, key))] = (float(g.loc[i, "Max_SSIM"]), g.loc[i, "label"])
    rows = []
    for _, u in util.iterrows():
        vanilla = u["scheme"] == "none"
        b = (1.0, "none (undefended)") if vanilla else best.get(tuple(str(u[k]) for k in keys), (float("nan"), ""))
        enc = u.get("test_accuracy_encrypted")
        rows.append({"defense": _defense_text(u, keys), "vanilla": vanilla, "accuracy": float(u["test_accuracy_clean"]),
                     "accuracy_encrypted": float(enc) if enc is not None and enc == enc else float("nan"),
                     "best_Max_SSIM": b[0], "best_attack": b[1], "epochs": u["epochs"], "time_s": float(u["time_s"]),
                     "run_id": u["run_id"]})
    return rows


def frontier_figure(rows: list[dict]) -> bytes:
    """Test accuracy against the best attack's Max_SSIM, one point per defense setting."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, r in enumerate(r for r in rows if r["best_Max_SSIM"] == r["best_Max_SSIM"]):
        colour = "k" if r["vanilla"] else f"C{i % 10}"
        ax.scatter([r["best_Max_SSIM"]], [r["accuracy"]], color=colour, s=36, zorder=3, label=r["defense"])
        if r["accuracy_encrypted"] == r["accuracy_encrypted"]:
            ax.scatter([r["best_Max_SSIM"]], [r["accuracy_encrypted"]], facecolors="none", edgecolors=colour, s=36,
                       zorder=3)
        if r["vanilla"]:
            ax.axhline(r["accuracy"], color="k", ls=":", lw=0.8)
    ax.set_xlabel("best attack's Max_SSIM on the setting (privacy lost)")
    ax.set_ylabel("test accuracy (filled: clean test images; hollow: encrypted, K averaged)")
    ax.yaxis.label.set_size(7)
    ax.set_xlim(min([0.0] + [r["best_Max_SSIM"] - 0.05 for r in rows if r["best_Max_SSIM"] == r["best_Max_SSIM"]]), 1.05)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    ax.set_title("privacy/utility frontier (up and left is better for the defender)", fontsize=9)
    return _png(fig)


def _log_axes(ax, sizes) -> None:
    """Log-log axes whose x ticks are the sizes that were run; minor y labels only when the y
    range spans less than a decade (else the decades are labelled)."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    if 0 < len(sizes) <= 8:
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if hi / lo < 10 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=6)


def _unit(x):
    return np.clip((np.asarray(x, np.float32) + 1) / 2, 0, 1)


def gallery_figure(challenge_dir: Path, run_dir: Path, title: str) -> tuple[bytes, bytes | None]:
    """private | encryption | decryption for the best, median and worst encryption by SSIM (the
    better of its private images), and the Hungarian-matched private-set grid when the attack
    recovered a set."""
    from hidebench.challenge_io import load_key, load_npy, load_public
    from hidebench.metrics import challenge_metric, matched_set_metric

    plt = _plt()
    view = load_public(challenge_dir)
    key = load_key(challenge_dir, view)
    dec = load_npy(run_dir / "decryption.npy", "decryption")
    m = challenge_metric(dec, key, per_encryption=True)
    s = m["ssim"]
    best = s.max(1)
    order = np.argsort(-best, kind="stable")
    picks = [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]
    priv = key.private_of()
    fig, axes = plt.subplots(3, 3, figsize=(4.2, 4.6))
    for r, (name, e) in enumerate(picks):
        j = int(np.argmax(s[e]))
        for c, (img, head) in enumerate(((key.private[priv[e, j]], "private"), (view.encryptions[e], "encryption"),
                                         (dec[e], "decryption"))):
            ax = axes[r, c]
            ax.imshow(_unit(img))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(head, fontsize=8)
        axes[r, 0].set_ylabel(f"{name}\nSSIM {best[e]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=7)
    main = _png(fig)
    grid = None
    if (run_dir / "recovered.npy").is_file():
        rec = load_npy(run_dir / "recovered.npy", "recovered images")
        mm = matched_set_metric(rec, key.private)
        rows, cols_, ss = mm["match"][:, 0], mm["match"][:, 1], mm["per_image_ssim"]
        o = np.argsort(-ss, kind="stable")
        pick = o[np.linspace(0, len(o) - 1, min(12, len(o))).round().astype(int)]
        fig, axes = plt.subplots(2, len(pick), figsize=(0.9 * len(pick) + 0.4, 2.3), squeeze=False)
        for i, t in enumerate(pick):
            axes[0, i].imshow(_unit(key.private[cols_[t]]))
            axes[1, i].imshow(_unit(rec[rows[t]]))
            axes[1, i].set_title(f"{ss[t]:.2f}", fontsize=6)
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle(f"{title}: private set (top) and matched recoveries (bottom, SSIM); mean {mm['ssim']:.3f}",
                     fontsize=7)
        grid = _png(fig)
    return main, grid


# ----------------------------------------------------------------------------- tables

def _setting_text(row, extra: list[str]) -> str:
    s = f"{row['scheme']} {row['mode']} k={row['k']} T={row['T']} n_priv={row['n_priv']}"
    return s + "".join(f", {k}={row[k]}" for k in extra)


def _matches_anchor(row) -> bool:
    return (all(row.get(k) == v for k, v in ANCHOR_SETTING.items())
            and str(row.get("private_source", "")).startswith(ANCHOR_PRIVATE))


def leaderboard(done, extra: list[str], util=None) -> list[dict]:
    """Per setting, attacks by mean Max_SSIM over seeds (with the published figures where the
    setting is the 2020 challenge's), and the setting's test accuracy when `util` (the utility
    rows) trained on it."""
    import pandas as pd

    dkeys = _defense_keys(extra)
    accuracy = {} if util is None else {tuple(str(u[k]) for k in dkeys): u for _, u in util.iterrows()}
    rows = []
    keys = ["scheme", "mode", "k", "T", "n_priv", *extra]
    for _, g in done.groupby(keys, sort=True, dropna=False):
        first = g.iloc[0]
        setting = _setting_text(first, extra)
        u = accuracy.get(tuple(str(first[k]) for k in dkeys))
        acc = {"accuracy": float(u["test_accuracy_clean"]) if u is not None else float("nan"),
               "accuracy_encrypted": float(u["test_accuracy_encrypted"]) if u is not None else float("nan")}
        board = []
        for lab, h in g.groupby("label", sort=False):
            r = {"setting": setting, "label": lab, "attack": h["attack"].iloc[0], "seeds": int(h["seed"].nunique()),
                 **{m: float(h[m].mean()) for m in METRICS},
                 "Max_SSIM_sd": float(h["Max_SSIM"].std()) if len(h) > 1 else float("nan"),
                 "time_s": float(h["time_s"].mean()),
                 "threat": f"aux {h['aux'].iloc[0] if pd.notna(h['aux'].iloc[0]) else 'none'}; public pool "
                           f"{'yes' if bool(h['public_pool'].iloc[0]) else 'no'}",
                 "oracles": h["oracles"].iloc[0], "source": "this sweep", **acc}
            board.append(r)
        if _matches_anchor(first.to_dict()):
            for a in ANCHORS:
                board.append({"setting": setting, "label": a["label"], "attack": "carlini (published)", "seeds": None,
                              **{m: a[m] for m in METRICS}, "Max_SSIM_sd": float("nan"), "time_s": float("nan"),
                              "threat": a["threat"], "oracles": a["oracles"], "source": ANCHOR_SOURCE,
                              "published": True, "note": a["time"]})
        board.sort(key=lambda r: -r["Max_SSIM"])
        for rank, r in enumerate(board, 1):
            r["rank"] = rank
        rows += board
    return rows


def _missing(df) -> dict:
    """What a partly finished sweep lacks: runs not run, started but not finished, or failed
    (with the error), and the infeasible cells (with the reason)."""
    counts = df["status"].value_counts().to_dict()
    not_done = df[df["status"].isin(["pending", "started", "failed"])]
    runs = [{"run_id": r["run_id"], "status": r["status"], "error": r["error"] if isinstance(r["error"], str) else ""}
            for _, r in not_done.iterrows()]
    cells = {}
    for _, r in df[df["status"] == "skipped"].iterrows():
        cells.setdefault(r["run_id"].split("/seed=")[0], r["reason"])
    text = ""
    if len(not_done):
        parts = [f"{counts[s]} {w}" for s, w in (("pending", "not run"), ("started", "started, not finished"),
                                                 ("failed", "failed")) if counts.get(s)]
        text = f"{len(not_done)} of {len(df) - counts.get('skipped', 0)} runs missing: {', '.join(parts)}"
    return {"counts": counts, "runs": runs, "cells": [{"cell": c, "reason": r} for c, r in cells.items()],
            "n_missing": len(not_done), "text": text}


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# ----------------------------------------------------------------------------- the page

def build_sweep_report(sweep_dir, out_dir, *, max_galleries: int = 48) -> tuple[Path, str]:
    """Write REPORT/index.html, the figures (PNG) and tables (CSV) of the sweep in sweep_dir.
    Everything is computed before anything is written; each file is written under a temporary
    name and renamed. Returns the page's path and a line saying what is missing ('' if nothing)."""
    import jinja2
    import pandas as pd

    from hidebench import __version__

    sweep = Path(sweep_dir)
    manifest = read_sweep_manifest(sweep)
    out = check_out_dir(out_dir)
    if out.resolve() == sweep.resolve():
        raise HidebenchError(f"--out {out} is the sweep folder itself; give a report folder, e.g. {sweep / 'report'}")
    df = results_table(sweep)
    done = df[df["status"] == "done"].copy()
    util = done[done["attack"] == "utility"]
    done = done[done["attack"] != "utility"]
    labels = [a["label"] for a in manifest.sweep["attack"]]
    labels = [lab for lab in labels if lab in set(done["label"])]
    swept = _swept(manifest, done)
    extra = [k for k in manifest.grid_keys if k not in ("scheme", "mode", "k", "T", "n_priv")]
    files: dict[str, bytes] = {"results.csv": df.to_csv(index=False).encode()}
    page: dict = {"title": f"hidebench sweep report: {manifest.sweep['name']}", "sweep": manifest.sweep,
                  "source": manifest.document.get("source", {}).get("path"), "generated": time.strftime("%Y-%m-%d %H:%M"),
                  "version": __version__, "swept": swept,
                  "grid": [(k, manifest.sweep["grid"][k]) for k in manifest.grid_keys], "notes": [], "quality": [],
                  "scaling": [], "memory_note": "",
                  "galleries": [], "board": [], "anchors": ANCHORS, "anchor_source": ANCHOR_SOURCE,
                  "anchor_setting": ", ".join(f"{k}={v}" for k, v in ANCHOR_SETTING.items()) + f", {ANCHOR_PRIVATE}",
                  "hosts": sorted({str(h) for h in df["host"].dropna()}),
                  "devices": sorted({str(h) for h in df.get("device", pd.Series(dtype=str)).dropna()}),
                  "attacks": [{"label": a["label"], "name": a["name"], "seed": a["seed"],
                               "config": json.dumps(a["given"]["config"]) if a["given"]["config"] else "defaults",
                               "threat": json.dumps(a["given"]["threat"]) if a["given"]["threat"] else "defaults"}
                              for a in manifest.sweep["attack"]]}
    page["missing"] = _missing(df)
    page["n_runs"], page["n_done"] = len(df), len(done)

    # quality
    if not done.empty:
        for metric in METRICS:
            if swept:
                png, notes = quality_figure(done, swept, metric, labels)
                page["notes"] += notes if metric == "Max_SSIM" else []
            else:
                png = quality_bars(done, metric, labels)
            files[f"quality_{metric}.png"] = png
            page["quality"].append({"metric": metric, "png": f"quality_{metric}.png"})

    # scaling
    fits = scaling_fits(done) if not done.empty else []
    if fits:
        for quantity in ("time", "memory"):
            name = f"scaling_{quantity}.png"
            files[name] = scaling_figure(done, labels, quantity, fits)
            page["scaling"].append({"quantity": quantity, "png": name})
    reused = done["runs_before_in_process"].fillna(0) > 0 if "runs_before_in_process" in done else None
    if reused is not None and reused.any():
        page["memory_note"] = (f"{int(reused.sum())} of {len(done)} runs ran in a worker process that had run others "
                               "before; on Linux the sweep resets the kernel's peak mark before each run, so their peak "
                               "is their own, over a baseline of whatever the process had loaded (libraries, earlier "
                               "runs' leftovers); --fresh-workers isolates runs completely.")
    fit_rows = [{"label": f["label"], "quantity": f["quantity"], "stage": f["stage"], "exponent": f["exponent"],
                 "ci_low": f["ci"][0] if f["ci"] else None, "ci_high": f["ci"][1] if f["ci"] else None,
                 "runs": f["n"], "sizes": f["sizes"]} for f in fits]
    page["fits"] = [{**r, "text": _fit_text(f)} for r, f in zip(fit_rows, fits)]
    page["n_sizes"] = int(done["n_encryptions"].nunique()) if not done.empty else 0
    files["scaling_fits.csv"] = pd.DataFrame(fit_rows, columns=["label", "quantity", "stage", "exponent", "ci_low",
                                                                "ci_high", "runs", "sizes"]).to_csv(index=False).encode()

    # reconstructions: per attack and setting, the run of the median seed
    picked = []
    for (lab, cell), g in done.groupby(["label", done["run_id"].str.split("/seed=").str[0]], sort=False):
        g = g.sort_values("Max_SSIM")
        picked.append((labels.index(lab), cell, g.iloc[(len(g) - 1) // 2]))
    cell_order = {}
    for r in manifest.attack_runs:
        cell_order.setdefault(r.cell_id, len(cell_order))
    picked.sort(key=lambda t: (t[0], cell_order.get(t[1], len(cell_order)), t[1]))
    for i, (_, cell, row) in enumerate(picked[:max_galleries]):
        title = f"{row['label']} | {cell} | seed {row['seed']} | Max_SSIM {row['Max_SSIM']:.3f}"
        try:
            main, grid = gallery_figure(sweep / row["challenge"], sweep / row["run_dir"], title)
        except (HidebenchError, OSError) as e:
            page["notes"].append(f"no gallery for {row['run_id']}: {e}")
            continue
        entry = {"label": row["label"], "cell": cell, "seed": row["seed"], "Max_SSIM": row["Max_SSIM"],
                 "png": f"gallery_{i:03d}.png", "grid": None}
        files[entry["png"]] = main
        if grid is not None:
            entry["grid"] = f"privateset_{i:03d}.png"
            files[entry["grid"]] = grid
        page["galleries"].append(entry)
    if len(picked) > max_galleries:
        page["notes"].append(f"{len(picked) - max_galleries} more reconstruction galleries not drawn "
                             f"(max_galleries={max_galleries})")

    # leaderboard
    board = leaderboard(done, extra, util) if not done.empty else []
    page["board"] = [{**r, **{f"{k}_text": _fmt(r.get(k)) for k in (*METRICS, "Max_SSIM_sd", "time_s")},
                      "accuracy_text": " / ".join(t for t in (_fmt(r.get("accuracy")), _fmt(r.get("accuracy_encrypted")))
                                                 if t)}
                     for r in board]
    page["anchor_matched"] = any(r.get("published") for r in board)
    files["leaderboard.csv"] = pd.DataFrame(board, columns=["setting", "rank", "label", "attack", "seeds", *METRICS,
                                                            "Max_SSIM_sd", "time_s", "accuracy", "accuracy_encrypted",
                                                            "threat", "oracles", "source"]).to_csv(index=False).encode()

    # utility: accuracy per defense setting and the privacy/utility frontier
    page["utility"] = frontier(done, util, extra) if not util.empty else []
    page["utility_config"] = json.dumps((manifest.sweep.get("utility") or {}).get("config"))
    if page["utility"]:
        files["frontier.png"] = frontier_figure(page["utility"])
        files["frontier.csv"] = pd.DataFrame(page["utility"]).to_csv(index=False).encode()

    env = jinja2.Environment(loader=jinja2.PackageLoader("hidebench.app", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _fmt
    page["files"] = sorted(files)
    files["index.html"] = env.get_template("sweep_report.html").render(**page).encode()

    write_files(out, files)
    for stale in out.glob("*.png"):        # figures of an earlier report of this folder that are gone now
        if stale.name not in files and stale.name.startswith(("gallery_", "privateset_", "quality_", "scaling_")):
            stale.unlink()
    return out / "index.html", page["missing"]["text"]
