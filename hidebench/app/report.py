"""Reports rendered from run records: one row per record.json, a CSV, an HTML table and plots.

Results are data; this module only reads them. A scaling plot (total time against the number
of private images, log-log) is drawn with one fitted exponent per attack and oracle setting
that was run at two or more sizes. The log-log fit (`fit_loglog`, with its confidence interval)
is the one the sweep report uses too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hidebench.challenge_io import check_out_dir, write_bytes
from hidebench.record import SETTING_KEYS, load_record, record_row
from hidebench.types import HidebenchError


def find_records(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            out.append(p)
        elif p.is_file():
            raise HidebenchError(f"{p} is not a .json run record (record.json) nor a folder of runs")
        elif p.is_dir():
            out += sorted(p.rglob("record.json"))
        else:
            raise HidebenchError(f"{p} does not exist (give run folders or record.json files)")
    if not out:
        raise HidebenchError(f"no record.json found under {', '.join(map(str, paths))}")
    return out


def records_table(paths, setting_keys=SETTING_KEYS) -> pd.DataFrame:
    """One row per run record (record_row), both attack families alike, with its folder (`run`):
    attack, family, oracles, seed, the setting (`setting_keys`), every scalar metric, timing and
    the peak memory. A metric a family does not report is empty in the other's rows."""
    return pd.DataFrame([{"run": str(path.parent), **record_row(load_record(path), setting_keys)}
                         for path in find_records(paths)])


def fit_loglog(x, y, level: float = 0.95) -> dict | None:
    """Least-squares slope of log y on log x (the scaling exponent) with its confidence interval
    (Student t, n - 2 degrees of freedom; None with fewer than 3 points). None if x takes fewer
    than two distinct values. Points that are not positive and finite are left out."""
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


def fit_text(f: dict | None) -> str:
    """A fit as 'exponent [CI]'."""
    if f is None:
        return "n/a"
    ci = f"[{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]" if f["ci"] else "(no CI: 2 points)"
    return f"{f['exponent']:.2f} {ci}"


def scaling_fits(df: pd.DataFrame) -> list[dict]:
    """One scaling fit of total time against n_priv (fit_loglog: exponent, interval) per
    (attack, oracles) group that was run at >= 2 distinct sizes: different attacks (or oracle
    settings) cost different amounts and never share one fit."""
    if "n_priv" not in df or "time.total_s" not in df:
        return []
    d = df.copy()
    d["n_priv"] = pd.to_numeric(d["n_priv"], errors="coerce")
    d["time.total_s"] = pd.to_numeric(d["time.total_s"], errors="coerce")
    d = d[(d["n_priv"] > 0) & (d["time.total_s"] > 0)]
    fits = []
    for (attack, oracles), g in d.groupby(["attack", "oracles"], sort=True):
        if g["n_priv"].nunique() < 2:
            continue
        g = g.sort_values("n_priv")
        n, seconds = g["n_priv"].to_numpy(float), g["time.total_s"].to_numpy(float)
        fits.append({"attack": attack, "oracles": oracles, "n_priv": n, "seconds": seconds, **fit_loglog(n, seconds)})
    return fits


def bar_labels(df: pd.DataFrame) -> list[str]:
    """Each run's own attack and oracle setting, its size when the runs differ in size, and its
    folder name where that still leaves two bars alike (e.g. a benchmark's runs at several
    sizes all read 'carlini / none' otherwise)."""
    sizes = df["n_priv"] if "n_priv" in df and df["n_priv"].nunique() > 1 else None
    labels = []
    for i, (a, o) in enumerate(zip(df["attack"].tolist(), df["oracles"].tolist())):
        label = f"{a}\n{o}"
        if sizes is not None and pd.notna(sizes.iloc[i]):
            label += f"\nn={int(sizes.iloc[i])}"
        labels.append(label)
    runs = df["run"].tolist() if "run" in df else [""] * len(labels)
    return [f"{lab}\n{Path(r).name}" if labels.count(lab) > 1 and r else lab for lab, r in zip(labels, runs)]


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Write each named file into out through a temporary name: none is ever half-written."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_bytes(out / name, data)


def build_report(paths, out_dir) -> Path:
    """results.csv, report.html and plots in out_dir. Everything is computed before anything is
    written, and each file is written under a temporary name and renamed, so a bad input leaves
    out_dir as it was."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = check_out_dir(out_dir)
    df = records_table(paths)
    files: dict[str, bytes] = {"results.csv": df.to_csv(index=False).encode()}
    html = [f"<h1>hidebench report</h1><p>{len(df)} runs</p>", df.to_html(index=False, float_format="%.4f")]

    def png(fig) -> bytes:
        import io

        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return buf.getvalue()

    if "challenge.Max_SSIM" in df:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(df) + 2), 3))
        ax.bar(range(len(df)), pd.to_numeric(df["challenge.Max_SSIM"], errors="coerce"))
        ax.set_xticks(range(len(df)), bar_labels(df), fontsize=7)
        ax.set_ylabel("Max_SSIM")
        files["max_ssim.png"] = png(fig)
        html.append('<img src="max_ssim.png">')
    fits = scaling_fits(df)
    if fits:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for f in fits:
            ax.loglog(f["n_priv"], f["seconds"], "o-", label=f"{f['attack']} / {f['oracles']}: n^{f['exponent']:.2f}")
        ax.set_xlabel("private images")
        ax.set_ylabel("total seconds")
        ax.set_title("time against size, fitted per attack and oracle setting", fontsize=8)
        ax.legend(fontsize=7)
        files["scaling.png"] = png(fig)
        html.append("<ul>" + "".join(f"<li>{f['attack']} / {f['oracles']}: time ~ n_priv^{f['exponent']:.2f} "
                                     f"({len(f['n_priv'])} runs; exponent, 95% CI: {fit_text(f)})</li>" for f in fits)
                    + '</ul><img src="scaling.png">')
    files["report.html"] = "\n".join(html).encode()

    write_files(out, files)
    return out / "report.html"
