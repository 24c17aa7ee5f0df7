"""The figures of a sweep's report, each drawn from the results table (or a run's arrays) and
returned as PNG bytes: quality against the swept parameters, the phase diagram (Max_SSIM over
n_priv x T per k), time and memory scaling, the privacy/utility frontier, and the
reconstruction galleries. Nothing here reads a sweep folder or writes a file.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from hidebench.app.report import fit_text

MAX_LINES = 4           # other-parameter combinations drawn as their own lines before averaging over them


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, tight: bool = True) -> bytes:
    """The figure as PNG bytes (tight: lay it out with tight_layout first, for figures not
    created with a layout engine)."""
    plt = _plt()
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def stages(d, suffix: str, nested: bool = False) -> list[str]:
    """Stage columns time.STAGE{suffix} with values in d: top-level stages, and with `nested`
    also their steps (grouping.clustering, regression.adam, ...)."""
    out = []
    for c in d.columns:
        if c.startswith("time.") and c.endswith(suffix):
            stage = c[len("time."):-len(suffix)]
            if stage and (nested or "." not in stage) and stage not in ("total", "peak") and d[c].notna().any():
                out.append(stage)
    return out


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


def phase_figure(table, label: str, metric: str = "Max_SSIM") -> bytes:
    """The phase diagram of one attack: a heat map of `metric` over n_priv (rows) x T (columns),
    one panel per k, each cell annotated with its value; `table` is phase_table's rows of that
    attack (mean over seeds). Cells not run are left blank."""
    plt = _plt()
    ks = sorted(table["k"].unique().tolist())
    fig, axes = plt.subplots(1, len(ks), figsize=(0.75 * table["T"].nunique() * len(ks) + 1.8 * len(ks) + 0.6,
                                                  0.45 * table["n_priv"].nunique() + 1.9), squeeze=False,
                             layout="constrained")
    image = None
    for ax, k in zip(axes[0], ks):
        g = table[table["k"] == k].pivot_table(index="n_priv", columns="T", values=metric, aggfunc="mean")
        g = g.reindex(index=sorted(table["n_priv"].unique()), columns=sorted(table["T"].unique()))
        values = g.to_numpy(float)
        image = ax.imshow(np.ma.masked_invalid(values), origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="k" if v > 0.6 else "w")
        ax.set_xticks(range(len(g.columns)), [f"{t:g}" for t in g.columns], fontsize=7)
        ax.set_yticks(range(len(g.index)), [f"{n:g}" for n in g.index], fontsize=7)
        ax.set_xlabel("T (encryptions per private image)", fontsize=8)
        ax.set_ylabel("n_priv", fontsize=8)
        ax.set_title(f"k={k}", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9).ax.tick_params(labelsize=7)
    fig.suptitle(f"{label}: {metric} over n_priv x T (mean over seeds)", fontsize=9)
    return _png(fig, tight=False)


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
            series = [("total", g["time_s"])] + [(s, g[f"time.{s}_s"]) for s in stages(g, "_s")]
        else:
            series = [("total", g["peak_memory_mb"])] + [(s, g[f"time.{s}_peak_rss_mb"])
                                                          for s in stages(g, "_peak_rss_mb")]
        for i, (stage, y) in enumerate(series):
            y = y.astype(float)
            ok = (x > 0) & (y > 0)
            if not ok.any():
                continue
            f = next((f for f in fits if f["label"] == lab and f["quantity"] == quantity and f["stage"] == stage), None)
            colour = "k" if stage == "total" else f"C{i % 10}"
            ax.scatter(x[ok], y[ok], s=14, color=colour, alpha=0.8,
                       label=f"{stage}: n^{fit_text(f)}" if f else f"{stage}")
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
