"""Reports rendered from run records: one row per record.json, a CSV, an HTML table and plots.

Results are data; this module only reads them. A scaling plot (total time against the number
of private images, log-log, with the fitted exponent) is drawn when the runs differ in size.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hidebench.types import HidebenchError


def find_records(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            out.append(p)
        elif p.is_dir():
            out += sorted(p.rglob("record.json"))
        else:
            raise HidebenchError(f"{p} is neither a record.json nor a folder of runs")
    if not out:
        raise HidebenchError(f"no record.json found under {', '.join(map(str, paths))}")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, name + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            flat[name] = v
    return flat


def records_table(paths) -> pd.DataFrame:
    """One row per run: attack, oracles, scheme, sizes, every scalar metric and timing."""
    rows = []
    for path in find_records(paths):
        rec = json.loads(path.read_text())
        scheme = rec.get("challenge_manifest", {}).get("scheme", {})
        row = {"run": str(path.parent), "attack": rec.get("attack"), "oracles": ",".join(rec.get("oracles", [])) or "none",
               "k": scheme.get("k"), "mode": scheme.get("mode"), "T": scheme.get("T"),
               "n_encryptions": scheme.get("n_encryptions")}
        if row["T"] and row["n_encryptions"]:
            row["n_priv"] = row["n_encryptions"] // row["T"]
        row.update(_flatten(rec.get("metrics", {})))
        row.update(_flatten(rec.get("timings", {}), "time."))
        rows.append(row)
    return pd.DataFrame(rows)


def fit_exponent(n: np.ndarray, seconds: np.ndarray) -> float:
    """Slope of log(seconds) against log(n): the empirical scaling exponent."""
    return float(np.polyfit(np.log(n), np.log(seconds), 1)[0])


def build_report(paths, out_dir) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = records_table(paths)
    df.to_csv(out / "results.csv", index=False)
    html = [f"<h1>hidebench report</h1><p>{len(df)} runs</p>", df.to_html(index=False, float_format="%.4f")]
    if "challenge.Max_SSIM" in df:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(df) + 2), 3))
        labels = [f"{a}\n{o}" for a, o in zip(df["attack"], df["oracles"])]
        ax.bar(range(len(df)), df["challenge.Max_SSIM"])
        ax.set_xticks(range(len(df)), labels, fontsize=7)
        ax.set_ylabel("Max_SSIM")
        fig.tight_layout()
        fig.savefig(out / "max_ssim.png", dpi=120)
        plt.close(fig)
        html.append('<img src="max_ssim.png">')
    if "n_priv" in df and "time.total_s" in df and df["n_priv"].nunique() > 1:
        d = df.dropna(subset=["n_priv", "time.total_s"])
        slope = fit_exponent(d["n_priv"].to_numpy(float), d["time.total_s"].to_numpy(float))
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.loglog(d["n_priv"], d["time.total_s"], "o-")
        ax.set_xlabel("private images")
        ax.set_ylabel("total seconds")
        ax.set_title(f"fitted exponent {slope:.2f}")
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=120)
        plt.close(fig)
        html.append(f'<p>time ~ n_priv^{slope:.2f}</p><img src="scaling.png">')
    (out / "report.html").write_text("\n".join(html))
    return out / "report.html"
