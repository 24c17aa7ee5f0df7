"""The text gallery of an attack on a TextHide release: private sentence | recovered sentence.

gallery.md holds a Markdown table, rows chosen evenly from the best match to the worst (so the
table shows the spread, not only the successes), with each row's cosine and scores
(hidebench.text.metrics). It shows private sentences, i.e. the key: it is written owner-only
(0600), like key/, and belongs with the run folder, never beside a release's public files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hidebench.challenge_io import make_private, write_bytes


def _cell(text: str, limit: int = 160) -> str:
    t = " ".join(text.split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def pick_rows(rows: list[dict], n: int) -> list[dict]:
    """n rows evenly spaced from the first (best) to the last (worst)."""
    if len(rows) <= n:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]


def gallery_markdown(rows: list[dict], title: str, summary: str = "", n_show: int = 20) -> str:
    lines = [f"# {title}", ""]
    if summary:
        lines += [summary, ""]
    shown = pick_rows(rows, n_show)
    lines += [f"{len(shown)} of {len(rows)} matched pairs, from the best match to the worst.", "",
              "| # | private sentence | recovered sentence | cosine | exact | token F1 | BLEU |",
              "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(shown, 1):
        lines.append(f"| {i} | {_cell(r['private'])} | {_cell(r['recovered'])} | {r['cosine']:.3f} | "
                     f"{'yes' if r['exact'] else 'no'} | {r['token_f1']:.2f} | {r['bleu']:.2f} |")
    return "\n".join(lines) + "\n"


def write_gallery(path, rows: list[dict], title: str, summary: str = "", n_show: int = 20) -> Path:
    """gallery.md (owner-only: it shows the private sentences)."""
    p = Path(path)
    write_bytes(p, gallery_markdown(rows, title, summary, n_show).encode("utf-8"))
    make_private(p)
    return p
