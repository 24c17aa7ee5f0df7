"""`hidebench demo --text`: TextHide and its attack, offline, in a few minutes on two CPU cores.

Generates a TextHide release of 150 Rotten Tomatoes sentences (drawn from every 10th sentence of
the corpus; k=4, m=16, T=8, the texthide-rt recipe otherwise) at a fixed seed, so the demo is
reproducible and its key public, runs texthide_invert on it (masks, unmixing, nearest of 853
candidate sentences: the 150 private ones among 703 others) through the harness, and prints
private sentences beside recovered ones; OUT/runs/texthide_invert/gallery.md holds the table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hidebench.context import ExecutionContext

DEMO_SEED = 2020
DEMO_SLICE = "text:rotten_tomatoes[::10]"
DEMO_OVERRIDES = {"private_source": DEMO_SLICE, "n_priv": 150, "T": 8, "k": 4, "m": 16, "candidates": DEMO_SLICE}


def run_text_demo(out_dir="hidebench-demo-text", ctx: ExecutionContext | None = None, n_show: int = 8) -> dict:
    """Run the demo into out_dir (challenge/, runs/texthide_invert/); return the run record."""
    from hidebench.app.harness import run_release_attack
    from hidebench.app.text_gallery import pick_rows
    from hidebench.defenses.texthide_challenge import generate_text_to_dir
    from hidebench.text.metrics import score_text_release
    from hidebench.text.recipe import load_text_recipe
    from hidebench.text.release import is_text_release, load_text_key, load_text_public

    ctx = ctx or ExecutionContext(threads=1)
    out = Path(out_dir)
    ch = out / "challenge"
    t0 = time.perf_counter()
    recipe = load_text_recipe("texthide-rt", DEMO_OVERRIDES)
    if not is_text_release(ch):
        print(f"generating a TextHide release (k={recipe.scheme.k}, m={recipe.scheme.m}, {recipe.private.n_priv} "
              f"sentences of {DEMO_SLICE}, encoder all-MiniLM-L6-v2) in {ch} ...")
        generate_text_to_dir(recipe, ch, seed=DEMO_SEED, progress=ctx.progress, threads=ctx.threads or 1)
    t_gen = time.perf_counter() - t0
    print(f"running texthide_invert (masks, unmixing, nearest of the candidates {DEMO_SLICE}) ...")
    rec = run_release_attack("texthide_invert", ch, out / "runs" / "texthide_invert",
                             ctx=ctx.replace(cache_dir=out / "runs" / "texthide_invert" / "cache"))
    view = load_text_public(ch)
    key = load_text_key(ch, view)
    run = out / "runs" / "texthide_invert"
    texts = json.loads((run / "recovered_texts.json").read_text())
    _, rows = score_text_release(np.load(run / "decryption.npy"), np.load(run / "recovered.npy"), texts, key)
    m, st = rec.metrics, rec.metrics["stages"]
    print()
    for i, r in enumerate(pick_rows(rows, n_show), 1):
        mark = "=" if r["exact"] else "~"
        print(f"{i}. private:   {r['private']}\n   recovered: {r['recovered']}  [{mark} F1 {r['token_f1']:.2f}, "
              f"cosine {r['cosine']:.3f}]")
    masks = st["refined_masks"]
    print(f"\nmask accuracy {masks['mask_accuracy']:.3f} (sign clustering alone {st['masks']['mask_accuracy']:.3f}); "
          f"unmixing assignment accuracy {st['grouping']['assignment_accuracy']:.3f}")
    x = m["text"]
    print(f"sentences recovered exactly: {x['exact_match']:.1%} of {len(key.private)} (token F1 {x['token_f1']:.3f}, "
          f"BLEU {x['bleu']:.3f}); release {t_gen:.1f} s, attack {rec.timings['total_s']:.1f} s, demo "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"wrote {run / 'gallery.md'} (owner-only: it shows the private sentences) and {run / 'record.json'}")
    return {"texthide_invert": rec}
