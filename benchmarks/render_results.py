"""Render docs/results.md and the README's figures from the committed run records, so that a
figure and its record cannot disagree (tests/test_docs.py checks that both are current).

Each entry is a folder benchmarks/records/NAME/ with
    record.json   the run record, as the run wrote it (hidebench.record.RunRecord)
    meta.json     {"section", "title", "command", "commit", "date", "notes" (optional),
                   "readme": true to show it in the README's table of attacks (its first two
                       figures, or those "readme_figures" names),
                   "readme_table": SLUG to show it in the README's block
                       <!-- results:SLUG --> ... <!-- /results:SLUG --> (a comparison table: the
                       first two figures and "readme_columns", rows by "order"),
                   "machine" (optional) for a record that predates records naming it}
The machine comes from the record (its context), the figures from its metrics. A README block
<!-- include:PATH --> ... <!-- /include:PATH --> is the file PATH (relative to the repository) as
a benchmark script generated it, e.g. bench_utility.py's table of seeds, budgets and frontier.

    python benchmarks/render_results.py            # rewrite docs/results.md and the README table
    python benchmarks/render_results.py --check    # exit 1 if either is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "records"
RESULTS = ROOT / "docs" / "results.md"
README = ROOT / "README.md"


def entries() -> list[dict]:
    """Every committed entry: its meta, its record and the figures shown."""
    from hidebench.record import load_record

    out = []
    for d in sorted(p for p in RECORDS.iterdir() if p.is_dir()) if RECORDS.is_dir() else []:
        meta = json.loads((d / "meta.json").read_text())
        rec = load_record(d / "record.json")
        out.append({"name": d.name, "meta": meta, "record": rec, "figure": figure(rec)})
    return out


def figure(rec) -> dict:
    """The headline figures of a record: the challenge metric for a release attack, SSIM against
    the input and the private images for an update attack, accuracy for a utility run, and the
    attack's own headline metrics where it reports them (metrics['headline'])."""
    m = rec.metrics
    if "headline" in m:
        return dict(m["headline"])
    if "challenge" in m:
        c, stages = m["challenge"], m.get("stages", {})
        g = {**stages.get("similarity_network", {}), **stages.get("grouping", {})}
        out = {"Max_SSIM": c["Max_SSIM"], "Mean_SSIM": c["Mean_SSIM"], "Min_L2": c["Min_L2"], "Mean_L2": c["Mean_L2"]}
        out.update({name: g[key] for key, name in (("pair_auc", "pair AUC"), ("assignment_accuracy", "assignment acc."))
                    if key in g})
        if "fusion" in stages:
            out.update({"group purity": stages["fusion"]["mean_purity"], "fusion SSIM": stages["fusion"]["ssim"]})
        return out
    if "representation" in m:                     # TextHide attacks
        stages = m.get("stages", {})
        masks = stages.get("refined_masks") or stages.get("masks", {})     # as the attack last left them
        out = {"max cosine": m["representation"]["max_cosine"]}
        for name, part, key in (("private-set cosine", "private_set", "cosine"), ("exact match", "text", "exact_match"),
                                ("token F1", "text", "token_f1"), ("BLEU", "text", "bleu")):
            if key in m.get(part, {}):
                out[name] = m[part][key]
        if "mask_accuracy_up_to_sign" in masks:
            out["mask acc."] = masks["mask_accuracy_up_to_sign"]
        return out
    if "vs_private" in m:
        return {"SSIM vs input": m["vs_input"]["ssim"], "SSIM vs private": m["vs_private"]["ssim"]}
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and "accuracy" in k}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _setting(rec) -> str:
    s = rec.setting
    if rec.family == "update":
        defense = "no defense" if s.get("defense") in (None, "none") else f"{s['defense']} k={s.get('k')} {s.get('mode')}"
        return f"{defense}, batch {s.get('batch_size')}, {s.get('data')}"
    if rec.family == "utility":
        defense = "vanilla" if s.get("scheme") in (None, "none") else f"{s['scheme']} k={s.get('k')} {s.get('mode')}"
        extra = f" m={s['m']}" if s.get("m") is not None else ""
        return f"{defense}{extra}, {s.get('model')} model, {s.get('epochs') or s.get('T')} epochs, {s.get('train')}"
    m = f" m={s['m']}" if s.get("m") is not None else ""
    parts = [s.get("recipe") or "", f"{s.get('scheme')} k={s.get('k')}{m} {s.get('mode')}"]
    if s.get("n_priv"):
        parts.append(f"n_priv={s['n_priv']} T={s['T']}")
    if rec.oracles:
        parts.append(f"oracle: {', '.join(rec.oracles)}")
    return ", ".join(p for p in parts if p)


def _machine(rec, meta: dict) -> str:
    """From the record's context; a record written before records carried the machine names it
    in its meta ("machine")."""
    c = rec.context
    return f"{c.get('machine') or meta.get('machine', '?')}, {c.get('device', '?')}"


def render_results(es: list[dict]) -> str:
    lines = ["# Measured results", "",
             "Rendered by `python benchmarks/render_results.py` from the run records committed under",
             "`benchmarks/records/` (one folder per entry: the record as the run wrote it, and the command",
             "that ran it). Earlier measurements, with the commands of their day: [history.md](history.md).", ""]
    sections: dict[str, list] = {}
    for e in es:
        sections.setdefault(e["meta"]["section"], []).append(e)
    for section, items in sections.items():
        lines += [f"## {section}", ""]
        keys = list(dict.fromkeys(k for e in items for k in e["figure"]))
        lines.append("| entry | attack | setting | " + " | ".join(keys) + " | time (s) | peak MB | machine | commit |")
        lines.append("|" + "---|" * (len(keys) + 7))
        for e in items:
            r = e["record"]
            lines.append(f"| [{e['name']}](#{e['name']}) | {r.attack} | {_setting(r)} | "
                         + " | ".join(_fmt(e["figure"].get(k, "")) for k in keys)
                         + f" | {r.timings.get('total_s', float('nan')):.0f} | {r.peak_memory_mb or 0:.0f} | "
                         f"{_machine(r, e['meta'])} | {e['meta']['commit']} |")
        lines.append("")
        for e in items:
            m = e["meta"]
            lines += [f"### {e['name']}", "", f"{m['title']} ({m['date']}).", "", "```bash", m["command"], "```", ""]
            if m.get("notes"):
                lines += [m["notes"], ""]
    return "\n".join(lines).rstrip() + "\n"


def render_readme_table(es: list[dict]) -> str:
    rows = ["| attack | what it does | headline figure | setting |", "|---|---|---|---|"]
    for e in es:
        if not e["meta"].get("readme"):
            continue
        r, f = e["record"], e["figure"]
        shown = e["meta"].get("readme_figures") or list(f)[:2]
        head = ", ".join(f"{k} {_fmt(f[k])}" for k in shown)
        rows.append(f"| `{r.attack}` | {e['meta']['title']} | [{head}](docs/results.md#{e['name']}) | {_setting(r)} |")
    return "\n".join(rows)


def render_readme_block(es: list[dict], slug: str) -> str:
    """The compact table of the entries whose meta names `slug` (a comparison in the README)."""
    items = sorted((e for e in es if e["meta"].get("readme_table") == slug), key=lambda e: e["meta"].get("order", 0))
    keys = list(dict.fromkeys(k for e in items for k in [*list(e["figure"])[:2], *e["meta"].get("readme_columns", [])]))
    rows = ["| run | attack | " + " | ".join(keys) + " | setting |", "|---|---|" + "---|" * len(keys) + "---|"]
    for e in items:
        r = e["record"]
        rows.append(f"| [{e['meta']['title']}](docs/results.md#{e['name']}) | `{r.attack}` | "
                    + " | ".join(_fmt(e["figure"].get(k, "")) for k in keys) + f" | {_setting(r)} |")
    return "\n".join(rows)


def render_readme(readme: str, es: list[dict]) -> str:
    """The README with its table of attacks and every comparison block re-rendered."""
    blocks = {"attacks": render_readme_table(es)}
    blocks.update({slug: render_readme_block(es, slug) for slug in {e["meta"].get("readme_table") for e in es} - {None}})
    for slug, table in blocks.items():
        readme = _fill(readme, f"<!-- results:{slug} -->", f"<!-- /results:{slug} -->", table)
    for path in re.findall(r"<!-- include:(\S+) -->", readme):
        readme = _fill(readme, f"<!-- include:{path} -->", f"<!-- /include:{path} -->",
                       (ROOT / path).read_text().rstrip("\n"))
    return readme


def _fill(text: str, begin: str, end: str, body: str) -> str:
    if begin in text and end in text:
        a, b = text.index(begin) + len(begin), text.index(end)
        text = text[:a] + "\n" + body + "\n" + text[b:]
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/results.md or the README table is out of date")
    args = p.parse_args(argv)
    es = entries()
    results = render_results(es)
    new_readme = render_readme(README.read_text(), es)
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in ((RESULTS, results), (README, new_readme))
                 if not p.is_file() or p.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)} (run python benchmarks/render_results.py)", file=sys.stderr)
            return 1
        return 0
    RESULTS.write_text(results)
    README.write_text(new_readme)
    print(f"wrote {RESULTS.relative_to(ROOT)} ({len(es)} entries) and the README's table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
