"""The command line's TextHide commands: hidebench.app.cli dispatches to these when a recipe, a
release or a sweep is a TextHide one (hidebench.text), so the image commands stay as they were.

    hidebench challenge generate texthide-rt --out DIR [--k --m --mode --pooling ...]
    hidebench attack texthide_invert --challenge DIR --out RUN [--candidates SPEC|none] [--no-public]
    hidebench score --challenge DIR --decryption D.npy [--recovered R.npy]
    hidebench utility texthide-rt --out U [--k --m] [--vanilla]
    hidebench sweep texthide-km --out S
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hidebench.types import HidebenchError

# Flags that apply to one kind of recipe only: dest -> flag.
TEXT_ONLY_FLAGS = {"m": "--m", "public_source": "--public-source", "candidates": "--candidates", "pooling": "--pooling"}
IMAGE_ONLY_FLAGS = {"c2": "--c2", "pool_source": "--pool-source", "min_keypoints": "--min-keypoints",
                    "pool_screen": "--pool-screen", "aux": "--aux", "augment": "--augment", "download": "--download"}


def refuse_flags(args, flags: dict, what: str) -> None:
    """One error naming the given flags that do not apply to `what`."""
    given = [flag for dest, flag in flags.items() if getattr(args, dest, None) not in (None, False)]
    if given:
        raise HidebenchError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply to {what}")


def add_recipe_flags(g) -> None:
    """`challenge generate`'s TextHide-only overrides (the shared ones: --n-priv, --T, --k, --mode, --c1, --seed)."""
    g.add_argument("--m", type=int, help="size of the mask pool")
    g.add_argument("--public-source", help="public corpus an inter release mixes in (text source)")
    g.add_argument("--candidates", help="the attacker's candidate sentences recorded in the recipe (text source)")
    g.add_argument("--pooling", choices=["mean", "pooler", "cls"], help="the encoder's pooling")


def add_attack_flags(p, cls) -> None:
    """The flags of an attack on a TextHide release (its threat model: hidebench.text.threat)."""
    p.add_argument("--challenge", required=True, help="TextHide release folder (encryption.npy, label.npy, "
                                                      "manifest.json[, key/])")
    p.add_argument("--candidates", metavar="SPEC",
                   help="sentences the attacker holds, e.g. text:rotten_tomatoes or textfolder:PATH; 'none' for none "
                        "(default: the release recipe's [attacker] candidates)")
    p.add_argument("--no-public", action="store_true",
                   help="deny the public corpus of an inter release (granted by default: the manifest names it)")
    if cls.uses_oracles:
        p.add_argument("--oracle", action="append", metavar="PART",
                       help=f"hand over part of the key for an ablation: {', '.join(cls.uses_oracles)} "
                            "(repeat or comma-separate)")
    p.add_argument("--stages", metavar="LIST", help=f"stages to recompute even when cached: {', '.join(cls.stages)}")


def generate(args) -> int:
    from hidebench.defenses.texthide_challenge import generate_text_to_dir
    from hidebench.text.recipe import TEXT_OVERRIDES, load_text_recipe

    refuse_flags(args, IMAGE_ONLY_FLAGS, "a TextHide recipe")
    recipe = load_text_recipe(args.recipe, {name: getattr(args, name, None) for name in TEXT_OVERRIDES})
    seed = args.seed if args.seed is not None else recipe.seed
    if seed is not None and not args.quiet:
        print(f"note: seed {seed} regenerates the whole key; a release is secret only while its seed is unguessable "
              "(omit --seed for 128 bits of OS entropy)", file=sys.stderr)
    rel = generate_text_to_dir(recipe, args.out, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    s = recipe.scheme
    print(f"wrote {args.out}: {len(rel.view)} TextHide encryptions ({rel.view.dim}-d, {rel.view.encoder['id']}) of "
          f"{len(rel.key.private)} private sentences of {recipe.private.source}, k={s.k} m={s.m} {s.mode}")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in rel.timings.items()))
    return 0


def score(args) -> int:
    from hidebench.challenge_io import load_npy
    from hidebench.text.metrics import score_text_release
    from hidebench.text.release import load_text_key, load_text_public

    refuse_flags(args, {k: f"--{k.replace('_', '-')}" for k in ("k", "mode", "scheme", "T", "n_priv", "augment")},
                 "a TextHide release (its manifest states the scheme)")
    view = load_text_public(args.challenge)
    key = load_text_key(args.challenge, view)
    dec = load_npy(args.decryption, "decryption")
    rec = load_npy(args.recovered, "recovered representations") if args.recovered else None
    scores, _ = score_text_release(dec, rec, None, key)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        r = scores["representation"]
        print(f"max_cosine {r['max_cosine']:.4f}  mean_cosine {r['mean_cosine']:.4f}")
        if "private_set" in scores:
            print(f"private set (Hungarian-matched): cosine {scores['private_set']['cosine']:.4f}")
    return 0


def attack(args, cls, out: Path, config: dict, ctx, oracles: tuple[str, ...]) -> int:
    from hidebench.app.harness import run_release_attack
    from hidebench.threat import FROM_RECIPE

    threat = {"candidates": None if args.candidates == "none" else (args.candidates or FROM_RECIPE),
              "public": not args.no_public, "oracles": oracles}
    rec = run_release_attack(cls.name, args.challenge, out, config=config, threat=threat, ctx=ctx)
    m, t = rec.metrics, rec.timings
    print(f"time: {t['total_s']:.1f}s; peak RSS {rec.peak_memory_mb:.0f} MB; candidates "
          f"{rec.threat_model.get('candidates')}")
    if "representation" in m:
        st = m.get("stages", {})
        masks = st.get("refined_masks") or st.get("masks") or {}
        if masks:
            print(f"mask accuracy {masks['mask_accuracy']:.3f} (up to the sign symmetry "
                  f"{masks['mask_accuracy_up_to_sign']:.3f}), mask groups ARI {masks['mask_cluster_ari']:.3f}")
        print(f"decryption: max cosine {m['representation']['max_cosine']:.4f}")
        if "private_set" in m:
            print(f"private set (Hungarian-matched): cosine {m['private_set']['cosine']:.4f}")
        if "text" in m:
            x = m["text"]
            print(f"sentences: exact match {x['exact_match']:.3f}, token F1 {x['token_f1']:.3f}, BLEU {x['bleu']:.3f}; "
                  f"see {out}/gallery.md")
    print(f"wrote {out}/record.json")
    return 0


def utility(args, data_root) -> int:
    from hidebench.app.text_utility import run_text_utility, text_summary_line
    from hidebench.config import load_config
    from hidebench.context import ExecutionContext
    from hidebench.defenses.texthide_utility import TextUtilityConfig
    from hidebench.text.recipe import load_text_recipe

    refuse_flags(args, {"c2": "--c2", "pool_source": "--pool-source", "min_keypoints": "--min-keypoints",
                        "pool_screen": "--pool-screen", "model": "--model"}, "a TextHide recipe")
    recipe = load_text_recipe(args.recipe, {"k": args.k, "m": args.m, "mode": args.mode, "c1": args.c1})
    given = load_config(args.config, args.set)
    flags = {"epochs": args.epochs, "K": args.K, "train": args.train, "test": args.test}
    cfg = TextUtilityConfig.from_dict({**given, **{k: v for k, v in flags.items() if v is not None}})
    ctx = ExecutionContext(device=args.device, threads=args.threads, data_root=data_root, progress=not args.quiet,
                           seed=args.seed)
    rec = run_text_utility(recipe, args.out, cfg, vanilla=args.vanilla, ctx=ctx)
    print(text_summary_line(rec))
    print(f"wrote {Path(args.out) / 'record.json'}")
    return 0


def sweep(args) -> int:
    from hidebench.app.text_sweep import load_text_sweep, run_text_sweep, text_sweep_overview
    from hidebench.context import ExecutionContext

    if args.backend != "local" or args.workers > 1 or args.address or args.fresh_workers:
        raise HidebenchError(f"{args.sweep} is a TextHide sweep: it runs in this process, one run at a time "
                             "(drop --workers, --backend, --address, --fresh-workers)")
    if args.list:
        sw = load_text_sweep(args.sweep)
        print(f"{sw.name}: {text_sweep_overview(args.sweep)}")
        print("\n".join(f"  cell {c}" for c in sw.cells()))
        return 0
    if not args.out:
        raise HidebenchError("sweep: --out DIR is required (or --list to show the plan without running it)")
    ctx = ExecutionContext.from_env(device=args.device, threads=args.threads or 1)
    counts = run_text_sweep(args.sweep, args.out, ctx=ctx, retry_failed=args.retry_failed, progress=not args.quiet)
    return 1 if counts["failed"] else 0
