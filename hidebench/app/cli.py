"""The `hidebench` command line.

    hidebench demo                                  # fusion-denoising attack on the embedded faces challenge
    hidebench challenge generate RECIPE --out DIR   # write a challenge in the 2020 format
    hidebench challenge verify DIR                  # regenerate from the key's seed, compare sha256s
    hidebench challenge show DIR                    # PNG grid of private images and encryptions
    hidebench score --challenge DIR --decryption FILE
    hidebench attack NAME ...                       # any registered attack (hidebench list)
    hidebench sweep SWEEP --out DIR [--workers N]   # every attack on a grid of recipe parameters (resumable)
    hidebench utility RECIPE --out DIR [--vanilla]  # accuracy of a classifier trained on the encryptions
    hidebench report RUN_DIR... --out DIR           # table + plots from run records
    hidebench report SWEEP_DIR --out DIR            # the sweep's HTML report (index.html, PNGs, CSVs)
    hidebench list                                  # recipes, attacks and stock sweeps

Start-up imports no torch: commands import what they need when they run. Bad input ends in one
`hidebench: error: ...` line and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hidebench import __version__
from hidebench.types import HidebenchError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one `hidebench: error: ...` line, exit status 2."""

    def error(self, message):
        cmd = self.prog.removeprefix("hidebench").strip()
        self.exit(2, f"hidebench: error: {cmd + ': ' if cmd else ''}{message} (see '{self.prog} --help')\n")


def _data_root(args) -> str | None:
    """--data-root, else $HIDEBENCH_DATA (read here, once); passed on explicitly, never via os.environ."""
    import os

    from hidebench.context import DATA_ENV

    root = getattr(args, "data_root", None)
    if root:
        p = Path(root).expanduser()
        if not p.is_dir():
            raise HidebenchError(f"--data-root {p} is not an existing folder")
        return str(p)
    return os.environ.get(DATA_ENV) or None


# ----------------------------------------------------------------------------- challenge

def _cmd_generate(args) -> int:
    from hidebench.app import text_cli
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe
    from hidebench.text.recipe import is_text_recipe

    if is_text_recipe(args.recipe):
        return text_cli.generate(args)
    text_cli.refuse_flags(args, text_cli.TEXT_ONLY_FLAGS, "an image recipe")

    overrides = {"n_priv": args.n_priv, "T": args.T, **_defense_overrides(args), "private_source": args.private_source,
                 "aux": args.aux, "augment": args.augment}
    recipe = load_recipe(args.recipe, overrides)
    seed = args.seed if args.seed is not None else recipe.seed
    if seed is not None and not args.quiet:
        print(f"note: seed {seed} regenerates the whole key; a release is secret only while its seed is unguessable "
              "(omit --seed for 128 bits of OS entropy)", file=sys.stderr)
    ch = generate_to_dir(recipe, args.out, seed=args.seed, data_root=_data_root(args), progress=not args.quiet,
                         overwrite=args.overwrite, download=args.download)
    pool = ch.manifest["data"]["pool"]
    print(f"wrote {args.out}: {len(ch.view)} encryptions of {len(ch.key.private)} private images, "
          f"k={recipe.scheme.k} {recipe.scheme.mode}-dataset {recipe.scheme.scheme}")
    if pool:
        print(f"public pool {pool['source']}: {pool['accepted']}/{pool['screened']} regions passed SIFT >= "
              f"{recipe.pool.min_keypoints} keypoints (acceptance {pool['acceptance_rate']:.1%}, "
              f"median {pool['median_keypoints']:.0f})")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in ch.timings.items()))
    return 0


def _cmd_verify(args) -> int:
    from hidebench.defenses.challenge import verify

    res = verify(args.dir, data_root=_data_root(args), progress=not args.quiet)
    if res["ok"]:
        print(f"OK: all {res['files']} files of {args.dir} regenerate byte-identically")
        return 0
    if res["missing"]:
        print(f"MISSING in {args.dir}: {', '.join(res['missing'])}", file=sys.stderr)
    if res["mismatched"]:
        print(f"MISMATCH in {args.dir}: {', '.join(res['mismatched'])}", file=sys.stderr)
    if res["manifest_fields"]:
        print(f"manifest.json differs from the regenerated one in: {', '.join(res['manifest_fields'])}",
              file=sys.stderr)
    if res["foreign"]:
        print(f"FOREIGN in {args.dir}: {', '.join(res['foreign'])} (not part of a release: a publisher copying the "
              "public part would take it along; anything derived from the key belongs under key/)", file=sys.stderr)
    return 1


def _cmd_show(args) -> int:
    from hidebench.defenses.challenge import show
    from hidebench.text.release import is_text_release

    if is_text_release(args.dir):
        raise HidebenchError(f"{args.dir} is a TextHide release: `show` draws images; its private sentences are in "
                             f"{Path(args.dir) / 'key' / 'sentences.json'}, and text attacks write gallery.md")

    out = show(args.dir, args.out, n_private=args.rows)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- score

def _cmd_score(args) -> int:
    from hidebench.app.harness import score_release
    from hidebench.challenge_io import load_key, load_npy, load_public
    from hidebench.text.release import is_text_release

    if is_text_release(args.challenge):
        from hidebench.app.text_cli import score

        return score(args)

    view = load_public(args.challenge, **_release_args(args))
    key = load_key(args.challenge, view)
    dec = load_npy(args.decryption, "decryption")
    rec = load_npy(args.recovered, "recovered images") if args.recovered else None
    if rec is not None and not len(rec):
        raise HidebenchError(f"recovered images {args.recovered} hold no images (shape {rec.shape})")
    scores = score_release(dec, rec, key)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        for name, value in scores["challenge"].items():
            print(f"{name:10s} {value:.4f}")
        if "private_set" in scores:
            s = scores["private_set"]
            print(f"private set (Hungarian-matched): SSIM {s['ssim']:.4f}  PSNR {s['psnr']:.2f} dB")
    return 0


def _cmd_key_import(args) -> int:
    from hidebench.challenge_io import import_key, load_npy

    arrays = {name: load_npy(getattr(args, name), name.replace("_", " ")) for name in
              ("private", "selection", "private_labels", "lambdas", "sign") if getattr(args, name)}
    kd = import_key(args.dir, arrays, overwrite=args.overwrite, release=_release_args(args))
    print(f"wrote {kd}")
    return 0


# ----------------------------------------------------------------------------- attack

def _oracles(values: list[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(o.strip() for v in values or [] for o in v.split(",") if o.strip()))


def _context(args, out: Path):
    from hidebench.context import ExecutionContext

    stages = tuple(s.strip() for s in (getattr(args, "stages", None) or "").split(",") if s.strip())
    known = getattr(args.attack_cls, "stages", ())
    bad = [s for s in stages if s not in known]
    if bad:
        raise HidebenchError(f"unknown stage(s) {bad} for {args.attack_cls.name}; its stages: {list(known) or 'none'}")
    return ExecutionContext(device=args.device, threads=args.threads, data_root=_data_root(args),
                            cache_dir=str(Path(args.cache) if args.cache else out / "cache"),
                            progress=not args.quiet, seed=args.seed, recompute=stages, model_dir=_model_dir(args))


def _print_release(rec, out: Path) -> None:
    m, t = rec.metrics, rec.timings
    stage_t = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items() if k.endswith("_s") and k != "total_s"
                        and isinstance(v, (int, float)))
    print(f"time: {t['total_s']:.1f}s{f' ({stage_t})' if stage_t else ''}; peak RSS {rec.peak_memory_mb:.0f} MB")
    if "challenge" in m:
        c = m["challenge"]
        print(f"Max_SSIM {c['Max_SSIM']:.4f}  Mean_SSIM {c['Mean_SSIM']:.4f}  Min_L2 {c['Min_L2']:.4f}  "
              f"Mean_L2 {c['Mean_L2']:.4f}")
        if "private_set" in m:
            print(f"private set (Hungarian-matched): SSIM {m['private_set']['ssim']:.4f}  "
                  f"PSNR {m['private_set']['psnr']:.2f} dB")
        g = m.get("stages", {}).get("grouping", {})
        if "assignment_accuracy" in g:
            print(f"assignment accuracy {g['assignment_accuracy']:.3f}"
                  + (f", pair AUC {g['pair_auc']:.3f}" if "pair_auc" in g else ""))
    hits = [s for s, h in rec.stats.get("cache_hits", {}).items() if h]
    if hits:
        print(f"resumed from cache: {', '.join(hits)}")
    print(f"wrote {out}/record.json")


def _print_update(rec, out: Path) -> None:
    m, s = rec.metrics, rec.setting
    print(f"{rec.attack} | defense {s.get('scheme') or 'none'} (k={s.get('k')}, {s.get('mode')}) | "
          f"batch {s.get('batch_size')} | {rec.timings.get('total_s', float('nan')):.1f} s")
    print(f"  vs encrypted input: SSIM {m['vs_input']['ssim']:.3f}  PSNR {m['vs_input']['psnr']:.2f} dB")
    print(f"  vs private images:  SSIM {m['vs_private']['ssim']:.3f}  PSNR {m['vs_private']['psnr']:.2f} dB")
    print(f"  label accuracy {m['label_accuracy']:.2f}; wrote {out}/record.json")


def _cmd_attack(args) -> int:
    from hidebench.config import load_config

    cls = args.attack_cls
    out = Path(args.out)
    config = load_config(args.config, args.set, attack=cls.name)
    ctx = _context(args, out)
    if cls.family == "release" and cls.modality == "text":
        from hidebench.app.text_cli import attack

        attack(args, cls, out, config, ctx, _oracles(getattr(args, "oracle", None)))
    elif cls.family == "release":
        from hidebench.app.harness import run_release_attack
        from hidebench.threat import FROM_RECIPE, ReleaseThreatModel

        aux = None if args.aux == "none" else (args.aux or FROM_RECIPE)
        threat = ReleaseThreatModel(aux=aux, public_pool=not args.no_public_pool, oracles=_oracles(getattr(args, "oracle", None)))
        rec = run_release_attack(cls.name, args.challenge, out, config=config, threat=threat, ctx=ctx,
                                 release=_release_args(args))
        if args.aux is None and rec.threat_model.get("aux"):
            print(f"aux data: {rec.threat_model['aux']} (from the challenge's recipe)")
        _print_release(rec, out)
    else:
        from hidebench.app.harness import run_update_attack
        from hidebench.defenses.client import ClientExperiment
        from hidebench.threat import UpdateThreatModel

        exp = ClientExperiment.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(ClientExperiment)
                                          if getattr(args, f.name, None) is not None})
        threat = UpdateThreatModel.from_dict({name: getattr(args, name) for name in _threat_flags()})
        rec = run_update_attack(cls.name, exp, out, config=config, threat=threat, ctx=ctx)
        _print_update(rec, out)
    return 0


def _threat_flags() -> dict[str, tuple[str, object]]:
    """UpdateThreatModel field -> (flag, default): a grant that is off by default is switched on
    by --knows-X, one that is on by default switched off by --unknown-X."""
    from hidebench.threat import UpdateThreatModel

    out = {}
    for f in dataclasses.fields(UpdateThreatModel):
        if f.default is True:
            out[f.name] = ("--" + f.name.replace("knows_", "unknown-").replace("_", "-"), True)
        else:
            out[f.name] = ("--" + f.name.replace("_", "-"), f.default)
    return out


def _add_attack_parsers(sub) -> None:
    from hidebench.attacks.base import ATTACKS, get_attack
    from hidebench.stock import preset_names

    get_attack("identity")      # registers the built-in attacks (their modules import no torch)
    at = sub.add_parser("attack", help="run a registered attack (see `hidebench list`)",
                        description="Run a registered attack; `hidebench attack NAME --help` lists its options. "
                                    "Attack settings come from the attack's config (--config FILE, --set KEY=VALUE).")
    ats = at.add_subparsers(dest="attack_name", metavar="ATTACK", parser_class=_Parser)
    ats.required = True
    for name, cls in sorted(ATTACKS.items()):
        p = ats.add_parser(name, help=cls.summary(), description=(cls.__doc__ or "").strip())
        p.add_argument("--out", required=True, help="run folder (record.json and the attack's outputs)")
        if cls.family == "release" and cls.modality == "text":
            from hidebench.app.text_cli import add_attack_flags

            add_attack_flags(p, cls)
        elif cls.family == "release":
            p.add_argument("--challenge", required=True, help="challenge folder (encryption.npy, label.npy[, key/])")
            _add_release_flags(p)
            p.add_argument("--aux", metavar="SPEC", help="auxiliary data, e.g. cifar10:train or lfw[1::2]; 'none' for "
                                                         "none (default: the challenge recipe's suggestion)")
            p.add_argument("--no-public-pool", action="store_true",
                           help="deny the public pool (by default the attacker may draw its own patches from the pool "
                                "the recipe names, never the release's patches)")
            if cls.uses_oracles:
                p.add_argument("--oracle", action="append", metavar="PART",
                               help=f"hand over part of the key for an ablation: {', '.join(cls.uses_oracles)} "
                                    "(repeat or comma-separate)")
            if getattr(cls, "stages", ()):
                p.add_argument("--stages", metavar="LIST",
                               help=f"stages to recompute even when cached: {', '.join(cls.stages)}")
        else:
            _add_client_flags(p)
        presets = preset_names(name)
        p.add_argument("--config", metavar="FILE", help="JSON or TOML file with the attack's config"
                       + (f", or a preset: {', '.join(presets)} (challenge_data/presets/{name}/)" if presets else ""))
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="config value, SECTION.KEY=VALUE for nested sections (repeatable)")
        p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
        p.add_argument("--cache", metavar="DIR", help="stage cache folder (default: OUT/cache)")
        _add_model_dir(p)
        _add_run_flags(p)
        p.set_defaults(func=_cmd_attack, attack_cls=cls)


def _add_release_flags(p) -> None:
    """What a release states in prose, for a folder without manifest.json (a manifest wins; a
    contradiction is an error)."""
    g = p.add_argument_group("release scheme (for a bare encryption.npy + label.npy folder)")
    g.add_argument("--k", type=int, help="images mixed per encryption (default 6)")
    g.add_argument("--mode", choices=["inside", "cross"], help="inside- or cross-dataset (default cross)")
    g.add_argument("--scheme", choices=["instahide", "mixup"], help="instahide or mixup (default instahide)")
    g.add_argument("--T", type=int, help="encryptions per private image")
    g.add_argument("--n-priv", type=int, help="number of private images (T = E / n_priv)")
    g.add_argument("--augmented", dest="augment", action="store_true", default=None,
                   help="the release crops and flips every private image afresh per encryption")


def _release_args(args) -> dict:
    return {k: getattr(args, k) for k in ("k", "mode", "scheme", "T", "n_priv", "augment")
            if getattr(args, k, None) is not None}


# Recipe overrides that change the defense itself (scheme and public pool): `challenge generate`
# and `utility` take the same ones.
DEFENSE_OVERRIDES = ("k", "mode", "scheme", "c1", "c2", "pool_source", "min_keypoints", "pool_screen")


def _add_defense_flags(g) -> None:
    g.add_argument("--k", type=int, help="images mixed per encryption")
    g.add_argument("--mode", choices=["inside", "cross", "inter"],
                   help="inside- or cross-dataset mixing (TextHide: inside or inter)")
    g.add_argument("--scheme", choices=["instahide", "mixup"], help="instahide (sign mask) or mixup (none)")
    g.add_argument("--c1", type=float, help="upper bound on every coefficient")
    g.add_argument("--c2", type=float, help="lower bound on the two private coefficients' sum (cross)")
    g.add_argument("--pool-source", help="public pool: tinyimagenet, photos, imagefolder:PATH")
    g.add_argument("--min-keypoints", type=int, help="SIFT keypoints a public region needs")
    g.add_argument("--pool-screen", type=int, help="public regions to screen with SIFT")


def _defense_overrides(args) -> dict:
    return {k: getattr(args, k) for k in DEFENSE_OVERRIDES}


def _add_run_flags(p) -> None:
    """Execution context of one run (`attack`, `utility`): device, threads, data root, progress."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-root", metavar="DIR", help="data root (default: $HIDEBENCH_DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model_dir(p) -> None:
    p.add_argument("--model-dir", metavar="DIR",
                   help="cache of trained attack models (default: $HIDEBENCH_MODELS, else ~/.cache/hidebench/models)")


def _model_dir(args) -> str:
    from hidebench.model_cache import default_model_dir

    return str(Path(args.model_dir).expanduser() if getattr(args, "model_dir", None) else default_model_dir())


def _add_client_flags(p) -> None:
    """The simulated client's settings (hidebench.defenses.client.ClientExperiment) and the update threat model."""
    from hidebench.defenses import client

    for f in dataclasses.fields(client.ClientExperiment):
        default = f.default
        kind = type(default) if default is not None and not isinstance(default, bool) else str
        choices = getattr(client, f.name.upper() + "S", None)       # MODELS, DEFENSES, UPDATES, BN_MODES
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, metavar=f.name.upper(),
                       help=f"client's {f.name.replace('_', ' ')}" + (f": {', '.join(choices)}" if choices else "")
                            + f" (default: {default})")
    for name, (flag, default) in _threat_flags().items():
        what = name.removeprefix("knows_").replace("_", " ")
        if isinstance(default, bool):
            p.add_argument(flag, dest=name, action="store_false" if default else "store_true",
                           help=f"threat model: {'deny' if default else 'grant'} the {what}")
        else:
            p.add_argument(flag, dest=name, type=type(default), default=default,
                           help=f"threat model: {what} (default {default})")


# ----------------------------------------------------------------------------- report / list / demo

def _cmd_report(args) -> int:
    from hidebench.app.sweep import is_sweep_dir

    if len(args.runs) == 1 and is_sweep_dir(args.runs[0]):
        from hidebench.app.sweep_report import build_sweep_report

        out, missing = build_sweep_report(args.runs[0], args.out)
        print(f"wrote {out}" + (f" ({missing})" if missing else ""))
        return 0
    from hidebench.app.report import build_report

    out = build_report(args.runs, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_sweep(args) -> int:
    from hidebench.app.sweep import plan_lines, run_sweep
    from hidebench.app.text_sweep import is_text_sweep

    if is_text_sweep(args.sweep):
        from hidebench.app.text_cli import sweep

        _terminate_as_interrupt()
        return sweep(args)

    if args.list:
        print("\n".join(plan_lines(args.sweep, args.out, data_root=_data_root(args))))
        return 0
    if not args.out:
        raise HidebenchError("sweep: --out DIR is required (or --list to show the plan without running it)")
    from hidebench.context import ExecutionContext

    ctx = ExecutionContext.from_env(device=args.device, data_root=_data_root(args))
    _terminate_as_interrupt()
    summary = run_sweep(args.sweep, args.out, workers=args.workers, threads=args.threads, backend=args.backend,
                        address=args.address, retry_failed=args.retry_failed, fresh_workers=args.fresh_workers,
                        ctx=ctx, progress=not args.quiet)
    return 1 if summary.failed else 0


def _terminate_as_interrupt() -> None:
    """SIGTERM (kill, a job scheduler's stop) ends a sweep as Ctrl-C does: its worker processes
    are stopped with it instead of running on as orphans, and results.csv is written."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _cmd_list(args) -> int:
    from hidebench.attacks.base import ATTACKS
    from hidebench.recipes import builtin_recipes, load_recipe
    from hidebench.text.recipe import is_text_recipe, load_text_recipe

    print("recipes:")
    for name in builtin_recipes():
        r = load_text_recipe(name) if is_text_recipe(name) else load_recipe(name)
        note = f" [fixed seed {r.seed}: its key is public]" if r.seed is not None else ""
        print(f"  {name:15s} {r.description}{note}")
    print("attacks (hidebench attack NAME --help):")
    for name, cls in sorted(ATTACKS.items()):
        print(f"  {name:20s} [{cls.family}] {cls.summary()}")
    from hidebench.app.sweep import builtin_sweeps, sweep_overview
    from hidebench.app.text_sweep import is_text_sweep, text_sweep_overview

    print("sweeps (hidebench sweep NAME --out DIR; --list shows the cells):")
    for name in builtin_sweeps():
        print(f"  {name:22s} {text_sweep_overview(name) if is_text_sweep(name) else sweep_overview(name)}")
    return 0


def _cmd_models(args) -> int:
    from hidebench.model_cache import ModelCache

    cache = ModelCache(_model_dir(args))
    if args.models_command == "rm":
        if not args.ids and not args.all:
            raise HidebenchError("name the models to remove (see `hidebench models list`) or give --all")
        removed = cache.remove(None if args.all else args.ids)
        print(f"removed {len(removed)} model(s) from {cache.root}")
        return 0
    entries = cache.entries()
    print(f"model cache {cache.root}: {len(entries)} model(s)")
    for e in entries:
        sch = e["spec"].get("scheme", {})
        what = f"{sch.get('scheme')} k={sch.get('k')} {sch.get('mode')}" if sch else ""
        train = f"{e['train_s']:.0f} s" if isinstance(e.get("train_s"), (int, float)) else "?"
        print(f"  {e['id']}  {what}  aux {e['spec'].get('aux')}  trained in {train}  {e['size_bytes'] / 2 ** 20:.1f} MB")
    return 0


def _cmd_utility(args) -> int:
    from hidebench.app.utility import run_utility, summary_line
    from hidebench.config import load_config
    from hidebench.context import ExecutionContext
    from hidebench.defenses.utility.config import UtilityConfig
    from hidebench.recipes import load_recipe
    from hidebench.text.recipe import is_text_recipe

    if is_text_recipe(args.recipe):
        from hidebench.app.text_cli import utility

        return utility(args, _data_root(args))
    if args.m is not None:
        raise HidebenchError("--m does not apply to an image recipe")
    recipe = load_recipe(args.recipe, _defense_overrides(args))
    given = load_config(args.config, args.set)
    flags = {"model": args.model, "epochs": args.epochs, "K": args.K, "train": args.train, "test": args.test}
    cfg = UtilityConfig.from_dict({**given, **{k: v for k, v in flags.items() if v is not None}})
    ctx = ExecutionContext(device=args.device, threads=args.threads, data_root=_data_root(args),
                           progress=not args.quiet, seed=args.seed)
    rec = run_utility(recipe, args.out, cfg, vanilla=args.vanilla, ctx=ctx)
    print(summary_line(rec))
    print(f"wrote {Path(args.out) / 'record.json'}")
    return 0


def _cmd_demo(args) -> int:
    from hidebench.context import ExecutionContext

    if args.text:
        from hidebench.app.text_demo import run_text_demo

        run_text_demo(args.out or "hidebench-demo-text", ExecutionContext(threads=1))
        return 0
    from hidebench.app.demo import run_demo

    run_demo(args.out or "hidebench-demo", ExecutionContext(data_root=_data_root(args)))
    return 0


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hidebench", description="Benchmark suite for privacy attacks on InstaHide and Mixup.")
    p.add_argument("--version", action="version", version=f"hidebench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    d = sub.add_parser("demo", help="run the fusion-denoising attack (fdn) on the embedded faces challenge "
                                    "(no data root needed); --text: the TextHide attack on movie-review sentences")
    d.add_argument("--out", help="output folder (default: hidebench-demo, with --text hidebench-demo-text)")
    d.add_argument("--text", action="store_true",
                   help="TextHide instead: a release of 150 Rotten Tomatoes sentences and texthide_invert on it, "
                        "private sentences beside recovered ones (needs pip install 'hidebench[text]')")
    d.add_argument("--data-root", metavar="DIR", help="data root (not needed by the demo)")
    d.set_defaults(func=_cmd_demo)

    ch = sub.add_parser("challenge", help="generate, verify or show challenge datasets")
    chs = ch.add_subparsers(dest="challenge_command", metavar="ACTION", parser_class=_Parser)
    chs.required = True
    g = chs.add_parser("generate", help="write a challenge (encryption.npy, label.npy, manifest.json, key/)")
    g.add_argument("recipe", help="built-in recipe (instahide2020, faces, texthide-rt) or a .toml path")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--seed", type=int, help="seed (default: the recipe's; a recipe without one uses OS entropy)")
    g.add_argument("--n-priv", type=int, help="number of private images")
    g.add_argument("--T", type=int, help="encryptions per private image")
    _add_defense_flags(g)
    g.add_argument("--private-source", help="private data source, e.g. cifar10:test, lfw, imagefolder:PATH, npz:PATH; "
                                            "for a TextHide recipe text:rotten_tomatoes[0::2], textfolder:PATH")
    g.add_argument("--aux", help="attacker's auxiliary data recorded in the recipe")
    from hidebench.app.text_cli import add_recipe_flags

    add_recipe_flags(g.add_argument_group("TextHide recipes (texthide-rt)"))
    g.add_argument("--augment", action="store_true", default=None,
                   help="augment every private image afresh in each encryption (random crop with 4-pixel padding, "
                        "horizontal flip), as the InstaHide authors' training does; recorded in the key")
    g.add_argument("--overwrite", action="store_true", help="replace a challenge already in --out")
    g.add_argument("--download", action="store_true",
                   help="let torchvision download CIFAR-10 into the data root if it is missing (needs internet)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--data-root", metavar="DIR", help="folder holding cifar10/, tiny-imagenet-val/ (default: $HIDEBENCH_DATA)")
    g.set_defaults(func=_cmd_generate)
    v = chs.add_parser("verify", help="regenerate from manifest + key/seed and compare file hashes")
    v.add_argument("dir")
    v.add_argument("--quiet", action="store_true")
    v.add_argument("--data-root", metavar="DIR", help="data root (default: $HIDEBENCH_DATA)")
    v.set_defaults(func=_cmd_verify)
    s = chs.add_parser("show", help="PNG grid: private images beside their encryptions")
    s.add_argument("dir")
    s.add_argument("--out", help="PNG path (default: DIR/key/show.png; it shows the key, so never beside the public "
                                 "files)")
    s.add_argument("--rows", type=int, default=6, help="private images shown")
    s.set_defaults(func=_cmd_show)

    sc = sub.add_parser("score", help="score a decryption with the challenge metric")
    sc.add_argument("--challenge", required=True, help="challenge folder with key/")
    sc.add_argument("--decryption", required=True, help="E x 32 x 32 x 3 float .npy in [-1, 1]")
    sc.add_argument("--recovered", help="optional N x 32 x 32 x 3 .npy of recovered private images")
    sc.add_argument("--json", action="store_true", help="print JSON")
    _add_release_flags(sc)
    sc.set_defaults(func=_cmd_score)

    ky = sub.add_parser("key", help="import a ground truth given as arrays into a challenge's key/")
    kys = ky.add_subparsers(dest="key_command", metavar="ACTION", parser_class=_Parser)
    kys.required = True
    ki = kys.add_parser("import", help="write DIR/key/ from .npy arrays, so `score` and the stage metrics can use it",
                        description="Write DIR/key/ from ground-truth .npy arrays: the private images (N x 32 x 32 x 3 "
                                    "in [-1, 1]) and the selection (E x 2 for cross-dataset, E x k inside: which private "
                                    "images each encryption mixes, rows in release order) are required; labels, "
                                    "coefficients and the sign mask are optional. Checked against the release.")
    ki.add_argument("dir", help="challenge folder (encryption.npy, label.npy)")
    ki.add_argument("--private", required=True, metavar="NPY", help="private images, N x 32 x 32 x 3 in [-1, 1]")
    ki.add_argument("--selection", required=True, metavar="NPY", help="E x slots (or E x k) private image indices")
    ki.add_argument("--private-labels", metavar="NPY", help="N class ids (optional)")
    ki.add_argument("--lambdas", metavar="NPY", help="E x k coefficients (optional)")
    ki.add_argument("--sign", metavar="NPY", help="E x 32 x 32 x 3 sign mask (optional)")
    ki.add_argument("--overwrite", action="store_true", help="replace an existing key/")
    _add_release_flags(ki)
    ki.set_defaults(func=_cmd_key_import)

    _add_attack_parsers(sub)

    _add_sweep_parser(sub)

    _add_utility_parser(sub)

    r = sub.add_parser("report", help="aggregate run records (record.json) into a table and plots, or a sweep "
                                      "folder into its HTML report",
                       description="Given one sweep folder (hidebench sweep --out DIR): REPORT/index.html with quality "
                                   "against each swept parameter, scaling fits, reconstructions and a leaderboard, the "
                                   "figures as PNG and the tables as CSV (works on a partly finished sweep and says what "
                                   "is missing). Given run folders or record.json files: results.csv, report.html and "
                                   "plots.")
    r.add_argument("runs", nargs="+", help="a sweep folder, or run folders or record.json files")
    r.add_argument("--out", required=True, help="report folder")
    r.set_defaults(func=_cmd_report)

    m = sub.add_parser("models", help="list or remove cached trained attack models (deep_decompose, gan_demask)")
    ms = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    ms.required = True
    ml = ms.add_parser("list", help="show the cached models: scheme, aux data, training time, size")
    _add_model_dir(ml)
    ml.set_defaults(func=_cmd_models)
    mr = ms.add_parser("rm", help="remove cached models by id (from `hidebench models list`), or all of them")
    mr.add_argument("ids", nargs="*", metavar="ID")
    mr.add_argument("--all", action="store_true", help="remove every cached model")
    _add_model_dir(mr)
    mr.set_defaults(func=_cmd_models)

    ls = sub.add_parser("list", help="list built-in recipes, registered attacks and stock sweeps")
    ls.set_defaults(func=_cmd_list)
    return p


_SWEEP_EPILOG = """\
sweep file (TOML; unknown keys are errors naming the key):
  name = "my-sweep"                 # optional (default: the file name)
  description = "..."               # optional
  recipe = "faces"                  # base recipe: stock name or .toml path (relative to the sweep file)
  seeds = [1, 2]                    # challenge-generation seeds (default: the recipe's fixed seed)
  imports = ["my_attacks"]          # optional: modules that register more attacks (importable on every
                                    #   worker). They are code: a sweep file with imports is a script, to
                                    #   trust as one; they run when the sweep runs, never for --list
  [grid]                            # recipe parameters; every combination is a cell
  n_priv = [10, 20]                 # n_priv, T, k, mode, scheme, c1, c2, private_source, pool_source,
  T = [5, 10]                       #   min_keypoints, pool_screen, aux, or SECTION.KEY (e.g. pool.region)
  [[attack]]
  name = "identity"
  [[attack]]
  name = "carlini"
  label = "carlini-fast"            # optional: tells two entries of one attack apart (its folder name)
  seed = 0                          # the attack's seed (default 0)
  config = { similarity = { method = "pearson" } }   # the attack's config, validated by the attack
  threat = { aux = "lfw[1::2]", public_pool = true, oracles = ["assignment"] }

Infeasible cells are skipped with the reason. Each (cell, seed) challenge is generated once under
DIR/challenges/; each run writes DIR/runs/CELL/seed=S/LABEL/ (record.json, sweep_run.json);
DIR/results.csv is rebuilt from the records. Rerunning the same command resumes: finished runs
are kept, missing ones run, failed ones only with --retry-failed; a changed sweep file reuses every
run whose inputs did not change. Exit status 1 when runs failed.

examples:
  hidebench sweep faces-quick --out S --workers 2
  hidebench sweep faces-quick --list                 # cells and runs, nothing runs
  hidebench sweep my.toml --out S --backend ray      # a local Ray started for the sweep
  hidebench sweep my.toml --out /shared/S --backend ray --address HEAD:6379 --data-root /shared/data
  hidebench report S --out S/report
"""


def _add_sweep_parser(sub) -> None:
    from hidebench.app.sweep import BACKENDS

    s = sub.add_parser("sweep", help="run every attack on a grid of recipe parameters x seeds (resumable; local or Ray)",
                       description="Run a sweep: generate each (cell, seed) challenge once, run every attack on it, "
                                   "write one run record per run and DIR/results.csv.",
                       epilog=_SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("sweep", help="stock sweep (see `hidebench list`) or a sweep .toml file")
    s.add_argument("--out", metavar="DIR", help="sweep folder; rerun with the same DIR to resume (required unless --list)")
    s.add_argument("--workers", type=int, default=1,
                   help="runs at a time: worker processes (local) or tasks on the local Ray; 0 runs in this process "
                        "(default 1)")
    s.add_argument("--threads", type=int, help="CPU threads per run (default: this machine's cores / --workers)")
    s.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: worker processes on this machine; ray: Ray tasks (pip install 'hidebench[ray]')")
    s.add_argument("--address", metavar="ADDR",
                   help="an existing Ray cluster (HOST:6379, ray://HOST:10001 or auto) for --backend ray; DIR and the "
                        "data root must then be on storage every node sees at the same path")
    s.add_argument("--retry-failed", action="store_true", help="also redo the runs that failed before")
    s.add_argument("--fresh-workers", action="store_true",
                   help="a new worker process for every run (isolates runs completely: memory, allocator and thread "
                        "state; costs a few seconds of start-up a run); by default workers are kept between runs")
    s.add_argument("--list", action="store_true",
                   help="show the cells and runs (with their status in --out, if given) and exit; nothing runs")
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    s.add_argument("--data-root", metavar="DIR", help="data root (default: $HIDEBENCH_DATA), passed to every worker")
    s.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines; the summary only")
    s.set_defaults(func=_cmd_sweep)


def _add_utility_parser(sub) -> None:
    u = sub.add_parser(
        "utility", help="train a classifier on a defense's encryptions; test accuracy clean and encrypted",
        description="Train a classifier the InstaHide authors' way on fresh encryptions of the training split every "
                    "epoch (T = epochs; mixed labels, soft-label cross-entropy, crop and flip augmentation) and test it "
                    "on clean test images and on encrypted ones (predictions of K encryptions averaged). The recipe "
                    "supplies the scheme and public pool; train and test sets default to its source's splits "
                    "(cifar10:train / cifar10:test; for lfw its even / odd halves), not its private images. The default "
                    "model, fast, reimplements airbench (Jordan 2024, arXiv 2404.00498: patch-whitening first layer, "
                    "label smoothing, lookahead, test-time flips), 10 epochs: about 10 minutes of 2 CPU cores for "
                    "vanilla CIFAR-10. Writes "
                    "OUT/record.json and OUT/checkpoint.pt (every epoch; rerunning the same command resumes).",
        epilog="examples:\n  hidebench utility instahide2020 --out U/vanilla --vanilla\n"
               "  hidebench utility instahide2020 --out U/ih-cross-6\n"
               "  hidebench utility instahide2020 --out U/mixup-4 --scheme mixup --mode inside --k 4 --epochs 20\n"
               "  hidebench utility faces --out U/faces --epochs 5       # embedded data, no data root\n"
               "  hidebench utility texthide-rt --out U/th-k4-m256 --k 4 --m 256   # TextHide: a head on frozen MiniLM\n"
               "  hidebench utility texthide-rt --out U/th-vanilla --vanilla",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("recipe", help="built-in recipe (instahide2020, faces) or a .toml path")
    u.add_argument("--out", required=True, help="run folder (record.json, checkpoint.pt)")
    u.add_argument("--vanilla", action="store_true", help="train on the clean images (the reference), no defense")
    dg = u.add_argument_group("defense (recipe overrides, as for `challenge generate`)")
    _add_defense_flags(dg)
    dg.add_argument("--m", type=int, help="TextHide: size of the mask pool")
    t = u.add_argument_group("training (utility config; also --config FILE / --set KEY=VALUE)")
    t.add_argument("--train", metavar="SPEC", help="training data source (default: the recipe source's train split)")
    t.add_argument("--test", metavar="SPEC", help="test data source (default: the recipe source's test split)")
    t.add_argument("--model", choices=["fast", "convnet", "resnet18"],
                   help="classifier (default fast: the airbench-style net; convnet, resnet18)")
    t.add_argument("--epochs", type=int, help="epochs = encryptions of each training image (default: the model's, 8 for fast)")
    t.add_argument("--K", type=int, help="encryptions averaged per test image (default 10)")
    t.add_argument("--config", metavar="FILE", help="JSON or TOML file with the utility config")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="utility config value, e.g. batch_size=256, lr=0.1, width=32 (repeatable)")
    u.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffles and encryptions (default 0)")
    _add_run_flags(u)
    u.set_defaults(func=_cmd_utility)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except HidebenchError as e:
        print(f"hidebench: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:      # the file system refused (permissions, a file where a folder should be, a full disk)
        print(f"hidebench: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hidebench: interrupted", file=sys.stderr)
        return 130
