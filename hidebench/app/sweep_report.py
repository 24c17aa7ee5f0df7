"""The report of a sweep: REPORT/index.html (the jinja2 template templates/sweep_report.html),
with every figure beside it as a PNG and every table as a CSV, so they can go into a paper.

Rendered from the sweep folder only: its plan (sweep.json), the run records (through
`results_table`, the rows of results.csv) and, for the reconstruction galleries, each run's
decryption.npy / recovered.npy and its challenge's key. Nothing is recomputed but the
per-encryption SSIMs that order a gallery. A partly finished sweep gives a partial report that
lists what is missing (runs not run yet, started but not finished, failed with their error,
infeasible cells with the reason).

Sections: quality (Max_SSIM, and Mean_SSIM / Min_L2 / Mean_L2 on demand, against each swept
parameter, mean over seeds with the seeds' range), the phase diagram (when a sweep varies both
n_priv and T: per attack, a heat map of Max_SSIM over n_priv x T with a panel per k, mean over
seeds), scaling (wall time and peak memory against the number of encryptions on log-log axes, per
attack and per stage, with the fitted exponent and its 95% confidence interval), reconstructions
(private | encryption | decryption for the best, median and worst encryption, and the
Hungarian-matched private-set grid), leaderboard (attacks by Max_SSIM per setting, with the
threat model and oracles of every row, the test accuracy of the setting when the sweep trained on
it, and the published figures (hidebench.app.anchors) beside ours where the setting is the one
they were measured on), utility (with a `[utility]` section: test accuracy per defense setting
and the privacy/utility frontier, accuracy against the best attack's Max_SSIM). The figures are
drawn by hidebench.app.sweep_figures.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hidebench.app.anchors import Anchor, load_anchors
from hidebench.app.report import fit_loglog, fit_text, write_files
from hidebench.app.sweep_figures import (
    frontier_figure,
    gallery_figure,
    phase_figure,
    quality_bars,
    quality_figure,
    scaling_figure,
    stages,
)
from hidebench.app.sweep_results import METRICS, SweepManifest, read_sweep_manifest, results_table
from hidebench.challenge_io import check_out_dir
from hidebench.types import HidebenchError

SWEPT_ORDER = ("n_priv", "T", "k")
# Grid keys that change the defense (and so its utility run), beside scheme, mode and k.
DEFENSE_KEYS = ("c1", "c2", "pool_source", "min_keypoints", "pool_screen")
PHASE_METRIC = "Max_SSIM"


# ----------------------------------------------------------------------------- tables

def scaling_fits(done) -> list[dict]:
    """Exponents of time (total, per stage and per step of a stage) and peak memory (likewise)
    against the number of encryptions, per attack label."""
    fits = []
    for label, g in done.groupby("label", sort=False):
        x = g["n_encryptions"].astype(float)
        series = [("time", "total", g["time_s"])]
        series += [("time", s, g[f"time.{s}_s"]) for s in stages(g, "_s", nested=True)]
        series += [("memory", "total", g["peak_memory_mb"])]
        series += [("memory", s, g[f"time.{s}_peak_rss_mb"]) for s in stages(g, "_peak_rss_mb", nested=True)]
        for what, stage, y in series:
            f = fit_loglog(x, y.astype(float))
            if f is not None:
                fits.append({"label": label, "quantity": what, "stage": stage, **f})
    return fits


def _swept(manifest: SweepManifest, done) -> list[str]:
    """The grid keys that take two or more values among the finished runs (n_priv, T, k first)."""
    grid = manifest.sweep["grid"]
    keys = [k for k in manifest.grid_keys if len(grid[k]) > 1 and k in done and done[k].astype(str).nunique() > 1]
    return sorted(keys, key=lambda k: (SWEPT_ORDER.index(k) if k in SWEPT_ORDER else len(SWEPT_ORDER), keys.index(k)))


def phase_table(done, metric: str = PHASE_METRIC):
    """`metric` per attack label, k, n_priv and T: the mean over seeds of each seed's mean (over
    whatever else varies), with the number of seeds."""
    per_seed = done.groupby(["label", "k", "n_priv", "T", "seed"], sort=True)[metric].mean().reset_index()
    return (per_seed.groupby(["label", "k", "n_priv", "T"], sort=True)
            .agg(**{metric: (metric, "mean"), "seeds": ("seed", "nunique")}).reset_index())


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


def _setting_text(row, extra: list[str]) -> str:
    s = f"{row['scheme']} {row['mode']} k={row['k']} T={row['T']} n_priv={row['n_priv']}"
    return s + "".join(f", {k}={row[k]}" for k in extra)


def leaderboard(done, extra: list[str], util=None, anchors: list[Anchor] | None = None) -> list[dict]:
    """Per setting, attacks by mean Max_SSIM over seeds (with the published figures of `anchors`,
    default load_anchors(), where the setting is the one they were measured on), and the
    setting's test accuracy when `util` (the utility rows) trained on it."""
    import pandas as pd

    anchors = load_anchors() if anchors is None else anchors

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
        for a in (a for a in anchors if a.matches(first.to_dict())):
            board.append({"setting": setting, "label": a.label, "attack": f"{a.attack} (published)", "seeds": None,
                          **{m: a.metrics[m] for m in METRICS}, "Max_SSIM_sd": float("nan"), "time_s": float("nan"),
                          "threat": a.threat, "oracles": a.oracles, "source": a.citation, "published": True,
                          "note": a.cost})
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
    extra = [k for k in manifest.grid_keys if k not in ("scheme", "mode", "k", "T", "n_priv")]
    anchors = load_anchors()
    files: dict[str, bytes] = {"results.csv": df.to_csv(index=False).encode()}
    page = _overview(manifest, df, done, anchors)
    page.update(_quality_section(done, page["swept"], labels, files, page["notes"]))
    page.update(_phase_section(done, labels, files))
    page.update(_scaling_section(done, labels, files))
    page.update(_gallery_section(sweep, manifest, done, labels, files, page["notes"], max_galleries))
    page.update(_leaderboard_section(done, extra, util, anchors, files))
    page.update(_utility_section(manifest, done, util, extra, files))

    env = jinja2.Environment(loader=jinja2.PackageLoader("hidebench.app", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _fmt
    page["files"] = sorted(files)
    files["index.html"] = env.get_template("sweep_report.html").render(**page).encode()

    write_files(out, files)
    for stale in out.glob("*.png"):        # figures of an earlier report of this folder that are gone now
        if stale.name not in files and stale.name.startswith(("gallery_", "privateset_", "quality_", "scaling_",
                                                              "phase_")):
            stale.unlink()
    return out / "index.html", page["missing"]["text"]


def _overview(manifest: SweepManifest, df, done, anchors: list[Anchor]) -> dict:
    """The page's head: the sweep, its attacks, its status, and what the anchors were measured on."""
    import pandas as pd

    from hidebench import __version__

    sw = manifest.sweep
    return {"title": f"hidebench sweep report: {sw['name']}", "sweep": sw,
            "source": manifest.document.get("source", {}).get("path"), "generated": time.strftime("%Y-%m-%d %H:%M"),
            "version": __version__, "swept": _swept(manifest, done),
            "grid": [(k, sw["grid"][k]) for k in manifest.grid_keys], "notes": [],
            "anchors": anchors, "anchor_source": "; ".join(dict.fromkeys(a.citation for a in anchors)),
            "anchor_setting": "; ".join(dict.fromkeys(a.setting_text for a in anchors)),
            "hosts": sorted({str(h) for h in df["host"].dropna()}),
            "devices": sorted({str(h) for h in df.get("device", pd.Series(dtype=str)).dropna()}),
            "attacks": [{"label": a["label"], "name": a["name"], "seed": a["seed"],
                         "config": json.dumps(a["given"]["config"]) if a["given"]["config"] else "defaults",
                         "threat": json.dumps(a["given"]["threat"]) if a["given"]["threat"] else "defaults"}
                        for a in sw["attack"]],
            "missing": _missing(df), "n_runs": len(df), "n_done": len(done)}


def _quality_section(done, swept: list[str], labels: list[str], files: dict, notes: list) -> dict:
    quality = []
    if not done.empty:
        for metric in METRICS:
            if swept:
                png, more = quality_figure(done, swept, metric, labels)
                notes += more if metric == "Max_SSIM" else []
            else:
                png = quality_bars(done, metric, labels)
            files[f"quality_{metric}.png"] = png
            quality.append({"metric": metric, "png": f"quality_{metric}.png"})
    return {"quality": quality}


def _phase_section(done, labels: list[str], files: dict) -> dict:
    """The phase diagram of every attack whose finished runs vary both n_priv and T."""
    drawn = [lab for lab in labels
             if done.loc[done["label"] == lab, "n_priv"].nunique() > 1 and done.loc[done["label"] == lab, "T"].nunique() > 1]
    if not drawn:
        return {"phase": []}
    table = phase_table(done[done["label"].isin(drawn)])
    phase = []
    for lab in drawn:
        name = f"phase_{PHASE_METRIC}_{lab}.png"
        files[name] = phase_figure(table[table["label"] == lab], lab, PHASE_METRIC)
        phase.append({"label": lab, "png": name})
    files[f"phase_{PHASE_METRIC}.csv"] = table.to_csv(index=False).encode()
    return {"phase": phase, "phase_csv": f"phase_{PHASE_METRIC}.csv"}


def _scaling_section(done, labels: list[str], files: dict) -> dict:
    import pandas as pd

    fits = scaling_fits(done) if not done.empty else []
    section = {"scaling": [], "memory_note": ""}
    if fits:
        for quantity in ("time", "memory"):
            name = f"scaling_{quantity}.png"
            files[name] = scaling_figure(done, labels, quantity, fits)
            section["scaling"].append({"quantity": quantity, "png": name})
    reused = done["runs_before_in_process"].fillna(0) > 0 if "runs_before_in_process" in done else None
    if reused is not None and reused.any():
        section["memory_note"] = (f"{int(reused.sum())} of {len(done)} runs ran in a worker process that had run "
                                  "others before; on Linux the sweep resets the kernel's peak mark before each run, so "
                                  "their peak is their own, over a baseline of whatever the process had loaded "
                                  "(libraries, earlier runs' leftovers); --fresh-workers isolates runs completely.")
    fit_rows = [{"label": f["label"], "quantity": f["quantity"], "stage": f["stage"], "exponent": f["exponent"],
                 "ci_low": f["ci"][0] if f["ci"] else None, "ci_high": f["ci"][1] if f["ci"] else None,
                 "runs": f["n"], "sizes": f["sizes"]} for f in fits]
    section["fits"] = [{**r, "text": fit_text(f)} for r, f in zip(fit_rows, fits)]
    section["n_sizes"] = int(done["n_encryptions"].nunique()) if not done.empty else 0
    files["scaling_fits.csv"] = pd.DataFrame(fit_rows, columns=["label", "quantity", "stage", "exponent", "ci_low",
                                                                "ci_high", "runs", "sizes"]).to_csv(index=False).encode()
    return section


def _gallery_section(sweep: Path, manifest: SweepManifest, done, labels: list[str], files: dict, notes: list,
                     max_galleries: int) -> dict:
    """Per attack and setting, the galleries of the run of the median seed."""
    picked = []
    for (lab, cell), g in done.groupby(["label", done["run_id"].str.split("/seed=").str[0]], sort=False):
        g = g.sort_values("Max_SSIM")
        picked.append((labels.index(lab), cell, g.iloc[(len(g) - 1) // 2]))
    cell_order = {}
    for r in manifest.attack_runs:
        cell_order.setdefault(r.cell_id, len(cell_order))
    picked.sort(key=lambda t: (t[0], cell_order.get(t[1], len(cell_order)), t[1]))
    galleries = []
    for i, (_, cell, row) in enumerate(picked[:max_galleries]):
        title = f"{row['label']} | {cell} | seed {row['seed']} | Max_SSIM {row['Max_SSIM']:.3f}"
        try:
            main, grid = gallery_figure(sweep / row["challenge"], sweep / row["run_dir"], title)
        except (HidebenchError, OSError) as e:
            notes.append(f"no gallery for {row['run_id']}: {e}")
            continue
        entry = {"label": row["label"], "cell": cell, "seed": row["seed"], "Max_SSIM": row["Max_SSIM"],
                 "png": f"gallery_{i:03d}.png", "grid": None}
        files[entry["png"]] = main
        if grid is not None:
            entry["grid"] = f"privateset_{i:03d}.png"
            files[entry["grid"]] = grid
        galleries.append(entry)
    if len(picked) > max_galleries:
        notes.append(f"{len(picked) - max_galleries} more reconstruction galleries not drawn "
                     f"(max_galleries={max_galleries})")
    return {"galleries": galleries}


def _leaderboard_section(done, extra: list[str], util, anchors: list[Anchor], files: dict) -> dict:
    import pandas as pd

    board = leaderboard(done, extra, util, anchors) if not done.empty else []
    files["leaderboard.csv"] = pd.DataFrame(board, columns=["setting", "rank", "label", "attack", "seeds", *METRICS,
                                                            "Max_SSIM_sd", "time_s", "accuracy", "accuracy_encrypted",
                                                            "threat", "oracles", "source"]).to_csv(index=False).encode()
    rows = [{**r, **{f"{k}_text": _fmt(r.get(k)) for k in (*METRICS, "Max_SSIM_sd", "time_s")},
             "accuracy_text": " / ".join(t for t in (_fmt(r.get("accuracy")), _fmt(r.get("accuracy_encrypted"))) if t)}
            for r in board]
    return {"board": rows, "anchor_matched": any(r.get("published") for r in board)}


def _utility_section(manifest: SweepManifest, done, util, extra: list[str], files: dict) -> dict:
    """Accuracy per defense setting and the privacy/utility frontier."""
    import pandas as pd

    rows = frontier(done, util, extra) if not util.empty else []
    if rows:
        files["frontier.png"] = frontier_figure(rows)
        files["frontier.csv"] = pd.DataFrame(rows).to_csv(index=False).encode()
    return {"utility": rows, "utility_config": json.dumps((manifest.sweep.get("utility") or {}).get("config"))}
