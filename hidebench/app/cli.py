"""The `hidebench` command line.

    hidebench demo                                  # Carlini attack on the embedded faces challenge
    hidebench challenge generate RECIPE --out DIR   # write a challenge in the 2020 format
    hidebench challenge verify DIR                  # regenerate from the key's seed, compare sha256s
    hidebench challenge show DIR                    # PNG grid of private images and encryptions
    hidebench score --challenge DIR --decryption FILE
    hidebench attack NAME ...                       # any registered attack (hidebench list)
    hidebench report RUN_DIR... --out DIR           # table + plots from run records
    hidebench list                                  # recipes and attacks

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
from hidebench.types import HidebenchError


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
    from defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe

    overrides = {"n_priv": args.n_priv, "T": args.T, "k": args.k, "mode": args.mode, "scheme": args.scheme,
                 "c1": args.c1, "c2": args.c2, "private_source": args.private_source, "pool_source": args.pool_source,
                 "min_keypoints": args.min_keypoints, "pool_screen": args.pool_screen, "aux": args.aux}
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
    from defenses.challenge import verify

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
    return 1


def _cmd_show(args) -> int:
    from defenses.challenge import show

    out = show(args.dir, args.out or Path(args.dir) / "show.png", n_private=args.rows)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- score

def _cmd_score(args) -> int:
    from hidebench.app.harness import score_release
    from hidebench.challenge_io import load_key, load_npy, load_public

    view = load_public(args.challenge)
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
                            progress=not args.quiet, seed=args.seed, recompute=stages)


def _print_release(rec, out: Path) -> None:
    m, t = rec.metrics, rec.timings
    stage_t = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items() if k.endswith("_s") and k != "total_s"
                        and isinstance(v, (int, float)))
    print(f"time: {t['total_s']:.1f}s ({stage_t}); peak RSS {rec.peak_memory_mb:.0f} MB")
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
    config = load_config(args.config, args.set)
    ctx = _context(args, out)
    if cls.family == "release":
        from hidebench.app.harness import run_release_attack
        from hidebench.threat import FROM_RECIPE, ReleaseThreatModel

        aux = None if args.aux == "none" else (args.aux or FROM_RECIPE)
        threat = ReleaseThreatModel(aux=aux, public_pool=not args.no_public_pool, oracles=_oracles(getattr(args, "oracle", None)))
        rec = run_release_attack(cls.name, args.challenge, out, config=config, threat=threat, ctx=ctx)
        if args.aux is None and rec.threat_model.get("aux"):
            print(f"aux data: {rec.threat_model['aux']} (from the challenge's recipe)")
        _print_release(rec, out)
    else:
        from defenses.client import ClientExperiment
        from hidebench.app.harness import run_update_attack
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
    from attacks.base import ATTACKS, get_attack

    get_attack("identity")      # registers the built-in attacks (their modules import no torch)
    at = sub.add_parser("attack", help="run a registered attack (see `hidebench list`)",
                        description="Run a registered attack; `hidebench attack NAME --help` lists its options. "
                                    "Attack settings come from the attack's config (--config FILE, --set KEY=VALUE).")
    ats = at.add_subparsers(dest="attack_name", metavar="ATTACK", parser_class=_Parser)
    ats.required = True
    for name, cls in sorted(ATTACKS.items()):
        p = ats.add_parser(name, help=cls.summary(), description=(cls.__doc__ or "").strip())
        p.add_argument("--out", required=True, help="run folder (record.json and the attack's outputs)")
        if cls.family == "release":
            p.add_argument("--challenge", required=True, help="challenge folder (encryption.npy, label.npy[, key/])")
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
        p.add_argument("--config", metavar="FILE", help="JSON or TOML file with the attack's config")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="config value, SECTION.KEY=VALUE for nested sections (repeatable)")
        p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
        p.add_argument("--cache", metavar="DIR", help="stage cache folder (default: OUT/cache)")
        p.add_argument("--data-root", metavar="DIR", help="data root (default: $HIDEBENCH_DATA)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=_cmd_attack, attack_cls=cls)


def _add_client_flags(p) -> None:
    """The simulated client's settings (defenses.client.ClientExperiment) and the update threat model."""
    from defenses import client

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
    from hidebench.app.report import build_report

    out = build_report(args.runs, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_list(args) -> int:
    from attacks.base import ATTACKS
    from hidebench.recipes import builtin_recipes, load_recipe

    print("recipes:")
    for name in builtin_recipes():
        r = load_recipe(name)
        note = f" [fixed seed {r.seed}: its key is public]" if r.seed is not None else ""
        print(f"  {name:15s} {r.description}{note}")
    print("attacks (hidebench attack NAME --help):")
    for name, cls in sorted(ATTACKS.items()):
        print(f"  {name:20s} [{cls.family}] {cls.summary()}")
    return 0


def _cmd_demo(args) -> int:
    from hidebench.app.demo import run_demo
    from hidebench.context import ExecutionContext

    run_demo(args.out, ExecutionContext(data_root=_data_root(args)))
    return 0


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hidebench", description="Benchmark suite for privacy attacks on InstaHide and Mixup.")
    p.add_argument("--version", action="version", version=f"hidebench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    d = sub.add_parser("demo", help="run the Carlini attack on the embedded faces challenge (no data root needed)")
    d.add_argument("--out", default="hidebench-demo", help="output folder (default: hidebench-demo)")
    d.add_argument("--data-root", metavar="DIR", help="data root (not needed by the demo)")
    d.set_defaults(func=_cmd_demo)

    ch = sub.add_parser("challenge", help="generate, verify or show challenge datasets")
    chs = ch.add_subparsers(dest="challenge_command", metavar="ACTION", parser_class=_Parser)
    chs.required = True
    g = chs.add_parser("generate", help="write a challenge (encryption.npy, label.npy, manifest.json, key/)")
    g.add_argument("recipe", help="built-in recipe (instahide2020, faces) or a .toml path")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--seed", type=int, help="seed (default: the recipe's; a recipe without one uses OS entropy)")
    g.add_argument("--n-priv", type=int, help="number of private images")
    g.add_argument("--T", type=int, help="encryptions per private image")
    g.add_argument("--k", type=int, help="images mixed per encryption")
    g.add_argument("--mode", choices=["inside", "cross"], help="inside- or cross-dataset mixing")
    g.add_argument("--scheme", choices=["instahide", "mixup"], help="instahide (sign mask) or mixup (none)")
    g.add_argument("--c1", type=float, help="upper bound on every coefficient")
    g.add_argument("--c2", type=float, help="lower bound on the two private coefficients' sum (cross)")
    g.add_argument("--private-source", help="private data source, e.g. cifar10:test, lfw, imagefolder:PATH, npz:PATH")
    g.add_argument("--pool-source", help="public pool: tinyimagenet, photos, imagefolder:PATH")
    g.add_argument("--min-keypoints", type=int, help="SIFT keypoints a public region needs")
    g.add_argument("--pool-screen", type=int, help="public regions to screen with SIFT")
    g.add_argument("--aux", help="attacker's auxiliary data recorded in the recipe")
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
    s.add_argument("--out", help="PNG path (default: DIR/show.png)")
    s.add_argument("--rows", type=int, default=6, help="private images shown")
    s.set_defaults(func=_cmd_show)

    sc = sub.add_parser("score", help="score a decryption with the challenge metric")
    sc.add_argument("--challenge", required=True, help="challenge folder with key/")
    sc.add_argument("--decryption", required=True, help="E x 32 x 32 x 3 float .npy in [-1, 1]")
    sc.add_argument("--recovered", help="optional N x 32 x 32 x 3 .npy of recovered private images")
    sc.add_argument("--json", action="store_true", help="print JSON")
    sc.set_defaults(func=_cmd_score)

    _add_attack_parsers(sub)

    r = sub.add_parser("report", help="aggregate run records (record.json) into a table and plots")
    r.add_argument("runs", nargs="+", help="run folders or record.json files")
    r.add_argument("--out", required=True, help="report folder")
    r.set_defaults(func=_cmd_report)

    ls = sub.add_parser("list", help="list built-in recipes and registered attacks")
    ls.set_defaults(func=_cmd_list)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except HidebenchError as e:
        print(f"hidebench: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:      # the file system refused (permissions, a file where a folder should be, a full disk)
        print(f"hidebench: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hidebench: interrupted", file=sys.stderr)
        return 130
