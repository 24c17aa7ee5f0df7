"""The `hidebench` command line.

    hidebench demo                                  # Carlini attack on the embedded faces challenge
    hidebench challenge generate RECIPE --out DIR   # write a challenge in the 2020 format
    hidebench challenge verify DIR                  # regenerate from the key's seed, compare sha256s
    hidebench challenge show DIR                    # PNG grid of private images and encryptions
    hidebench score --challenge DIR --decryption FILE
    hidebench attack NAME ...                       # identity, carlini, gradient
    hidebench report RUN_DIR... --out DIR           # table + plots from run records
    hidebench list                                  # recipes and attacks
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hidebench import __version__
from hidebench.types import HidebenchError


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one `hidebench: error: ...` line, exit status 2
    (argparse's own prints a usage block and names the sub-command's prog instead)."""

    def error(self, message):
        cmd = self.prog.removeprefix("hidebench").strip()
        self.exit(2, f"hidebench: error: {cmd + ': ' if cmd else ''}{message} (see '{self.prog} --help')\n")


def _load_array(path, what: str):
    """One .npy array from a file, or a HidebenchError naming the file and what is wrong with it."""
    import pickle

    import numpy as np

    p = Path(path)
    if not p.exists():
        raise HidebenchError(f"{what} file {p} does not exist")
    if not p.is_file():
        raise HidebenchError(f"{what} {p} is not a file")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        kind = "an .npz archive" if magic.startswith(b"PK") else "not a .npy file (no NumPy header)"
        raise HidebenchError(f"{what} {p} is {kind}; expected one array saved with numpy.save")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        reason = "it holds Python objects, not numbers" if "allow_pickle" in str(e) else str(e)
        raise HidebenchError(f"{what} {p} is not a readable .npy array: {reason}") from e
    return a


def _check_out_dir(out, option: str = "--out") -> Path:
    """--out must be a folder or a path that does not exist yet (it is created)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise HidebenchError(f"{option} {p} is an existing file, not a folder; choose a folder path")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise HidebenchError(f"{option} {p}: {parent} is a file, so the folder cannot be created")
            break
    return p


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR",
                   help="folder holding cifar10/, tiny-imagenet-val/ ... (default: $HIDEBENCH_DATA)")


def _apply_data_root(args) -> None:
    if getattr(args, "data_root", None):
        root = Path(args.data_root).expanduser()
        if not root.is_dir():
            raise HidebenchError(f"--data-root {root} is not an existing folder")
        os.environ["HIDEBENCH_DATA"] = str(root)


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
    ch = generate_to_dir(recipe, args.out, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite,
                         download=args.download)
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

    res = verify(args.dir, progress=not args.quiet)
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


# ----------------------------------------------------------------------------- score / attack

def _cmd_score(args) -> int:
    from hidebench.challenge_io import load_key, load_public
    from hidebench.harness import score_result

    view = load_public(args.challenge)
    key = load_key(args.challenge, view)
    dec = _load_array(args.decryption, "decryption")
    rec = _load_array(args.recovered, "recovered images") if args.recovered else None
    if rec is not None and not len(rec):
        raise HidebenchError(f"recovered images {args.recovered} hold no images (shape {rec.shape})")
    scores = score_result(dec, rec, key)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        for name, value in scores["challenge"].items():
            print(f"{name:10s} {value:.4f}")
        if "private_set" in scores:
            s = scores["private_set"]
            print(f"private set (Hungarian-matched): SSIM {s['ssim']:.4f}  PSNR {s['psnr']:.2f} dB")
    return 0


def _cmd_identity(args) -> int:
    from hidebench.challenge_io import has_key, load_key, load_public
    from hidebench.harness import run_attack

    _check_out_dir(args.out)
    view = load_public(args.challenge)        # bad challenges fail before --out is touched
    if has_key(args.challenge):
        load_key(args.challenge, view)
    rec = run_attack("identity", args.challenge, args.out, progress=False)
    m = rec.get("metrics", {}).get("challenge")
    print(f"wrote {args.out}/decryption.npy" + (f"; Max_SSIM {m['Max_SSIM']:.4f}" if m else ""))
    return 0


def _cmd_report(args) -> int:
    from hidebench.report import build_report

    out = build_report(args.runs, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_list(args) -> int:
    from attacks.base import ATTACKS, get_attack
    from hidebench.recipes import builtin_recipes, load_recipe

    get_attack("identity")
    print("recipes:")
    for name in builtin_recipes():
        r = load_recipe(name)
        note = f" [fixed seed {r.seed}: its key is public]" if r.seed is not None else ""
        print(f"  {name:15s} {r.description}{note}")
    print("attacks:")
    for name, cls in sorted(ATTACKS.items()):
        print(f"  {name:20s} {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
    return 0


def _cmd_demo(args) -> int:
    from hidebench.cli_carlini import run_demo

    return run_demo(args.out)


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hidebench", description="Benchmark suite for privacy attacks on InstaHide and Mixup.")
    p.add_argument("--version", action="version", version=f"hidebench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("demo", help="run the Carlini attack on the embedded faces challenge (no data root needed)")
    d.add_argument("--out", default="hidebench-demo", help="output folder (default: hidebench-demo)")
    d.set_defaults(func=_cmd_demo)

    ch = sub.add_parser("challenge", help="generate, verify or show challenge datasets")
    chs = ch.add_subparsers(dest="challenge_command", metavar="ACTION")
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
    _add_data_root(g)
    g.set_defaults(func=_cmd_generate)
    v = chs.add_parser("verify", help="regenerate from manifest + key/seed and compare file hashes")
    v.add_argument("dir")
    v.add_argument("--quiet", action="store_true")
    _add_data_root(v)
    v.set_defaults(func=_cmd_verify)
    s = chs.add_parser("show", help="PNG grid: private images beside their encryptions")
    s.add_argument("dir")
    s.add_argument("--out", help="PNG path (default: DIR/show.png)")
    s.add_argument("--rows", type=int, default=6, help="private images shown")
    s.set_defaults(func=_cmd_show)

    sc = sub.add_parser("score", help="score a decryption with the challenge metric")
    sc.add_argument("--challenge", required=True, help="challenge folder with key/")
    sc.add_argument("--decryption", required=True, help="E x 32 x 32 x 3 .npy in [-1, 1]")
    sc.add_argument("--recovered", help="optional N x 32 x 32 x 3 .npy of recovered private images")
    sc.add_argument("--json", action="store_true", help="print JSON")
    sc.set_defaults(func=_cmd_score)

    at = sub.add_parser("attack", help="run an attack")
    ats = at.add_subparsers(dest="attack_command", metavar="ATTACK")
    ats.required = True
    i = ats.add_parser("identity", help="baseline: decryption = rescaled |encryption|")
    i.add_argument("--challenge", required=True)
    i.add_argument("--out", required=True)
    i.set_defaults(func=_cmd_identity)
    from hidebench import cli_carlini, cli_gradient

    cli_carlini.add_parser(ats)
    cli_gradient.add_parser(ats)

    r = sub.add_parser("report", help="aggregate run records (record.json) into a table and plots")
    r.add_argument("runs", nargs="+", help="run folders or record.json files")
    r.add_argument("--out", required=True, help="report folder")
    r.set_defaults(func=_cmd_report)

    ls = sub.add_parser("list", help="list built-in recipes and registered attacks")
    ls.set_defaults(func=_cmd_list)
    for parser in (d, i):
        _add_data_root(parser)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_data_root(args)
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
