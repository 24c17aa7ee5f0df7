"""Benchmark of the Carlini et al. attack: instahide2020 replica and n_priv scaling.

    HIDEBENCH_DATA=/path/to/data python benchmarks/bench_carlini.py --out bench-carlini \
        --n-priv 100 --oracle assignment --oracle none
    python benchmarks/bench_carlini.py --recipe faces --out bench-faces --n-priv 25 --oracle none

For every n_priv it generates the recipe's challenge (cached in OUT/challenges/), runs the attack
under each oracle setting ('none' = the full attack), and prints one row per run: challenge
metric, private-set SSIM, SSIM after each recovery step, grouping metrics, lambda error, wall
time and peak RSS per stage. All records go to OUT/summary.json (and each run's record.json).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def _cell(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="instahide2020", help="challenge recipe (instahide2020, faces or .toml)")
    p.add_argument("--out", required=True, help="benchmark folder")
    p.add_argument("--n-priv", type=int, nargs="+", default=[100], help="private set sizes (scaling)")
    p.add_argument("--T", type=int, help="encryptions per private image (default: the recipe's)")
    p.add_argument("--k", type=int, help="images per encryption (default: the recipe's)")
    p.add_argument("--oracle", action="append", default=None,
                   help="oracle setting per run: none, assignment, pairs, lambdas or a comma list (repeatable)")
    p.add_argument("--aux", help="aux spec (default: the recipe's)")
    p.add_argument("--no-public-pool", action="store_true", help="deny the attacker the public pool")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="attack config override")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPUs spin-wait)")
    p.add_argument("--seed", type=int, help="challenge seed (default: the recipe's; the README's figures: 2020)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from hidebench.app.harness import run_release_attack
    from hidebench.challenge_io import write_json
    from hidebench.config import load_config
    from hidebench.context import ExecutionContext
    from hidebench.defenses.challenge import generate_to_dir
    from hidebench.recipes import load_recipe
    from hidebench.threat import FROM_RECIPE, ReleaseThreatModel

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(None, args.set)
    ctx = ExecutionContext.from_env(threads=args.threads, progress=not args.quiet)
    oracles = args.oracle or ["assignment", "none"]
    rows = []
    header = (f"{'n_priv':>6} {'oracle':>11} {'Max_SSIM':>8} {'set_SSIM':>8} {'magn':>6} {'synced':>6} {'regr':>6} "
              f"{'orcl_g':>6} {'asg_acc':>7} {'pairAUC':>7} {'lam_err':>7} {'group_s':>7} {'regr_s':>7} "
              f"{'signs_s':>7} {'total_s':>7} {'RSS_MB':>6}")
    print(header)
    for n in args.n_priv:
        recipe = load_recipe(args.recipe, {"n_priv": n, "T": args.T, "k": args.k, "seed": args.seed})
        ch = out / "challenges" / f"{recipe.name}_n{n}_T{recipe.scheme.T}_k{recipe.scheme.k}"
        if not (ch / "encryption.npy").is_file():
            t0 = time.perf_counter()
            generate_to_dir(recipe, ch, data_root=ctx.data_root, progress=not args.quiet)
            if not args.quiet:
                print(f"generated {ch} in {time.perf_counter() - t0:.1f}s")
        for orc in oracles:
            granted = tuple(o for o in orc.split(",") if o and o != "none")
            run_dir = out / "runs" / f"{ch.name}_{'+'.join(granted) or 'none'}"
            threat = ReleaseThreatModel(aux=args.aux or FROM_RECIPE, public_pool=not args.no_public_pool,
                                        oracles=granted)
            rec = run_release_attack("carlini", ch, run_dir, config=config, threat=threat,
                                     ctx=ctx.replace(cache_dir=run_dir / "cache"))
            m, t = rec.metrics, rec.timings
            st = m["stages"]
            sb, so = st.get("ssim_by_step", {}), st.get("ssim_by_step_oracle_global_sign", {})
            g = st.get("grouping", {})
            row = {"n_priv": n, "oracle": "+".join(granted) or "none", "challenge": m["challenge"],
                   "private_set_ssim": m["private_set"]["ssim"], "ssim_by_step": sb, "ssim_oracle_global": so,
                   "grouping": {k: v for k, v in g.items() if k != "cluster_to_private"},
                   "after_reassign": st.get("after_reassign"), "lambda_mae": st.get("lambda_mae"),
                   "lambda_mae_split": st.get("lambda_mae_split"),
                   "relative_sign_accuracy": st.get("relative_sign_accuracy"), "timings": t, "run": str(run_dir)}
            rows.append(row)
            print(f"{n:>6} {row['oracle']:>11} {m['challenge']['Max_SSIM']:>8.4f} {row['private_set_ssim']:>8.4f} "
                  f"{_cell(sb.get('magnitudes')):>6} {_cell(sb.get('synced')):>6} {_cell(sb.get('regressed')):>6} "
                  f"{_cell(so.get('regressed')):>6} {_cell(g.get('assignment_accuracy')):>7} "
                  f"{_cell(g.get('pair_auc')):>7} {_cell(row['lambda_mae'], '{:.4f}'):>7} "
                  f"{t.get('similarity_model_s', 0) + t.get('grouping_s', 0):>7.1f} "
                  f"{t.get('regression_s', 0):>7.1f} {t.get('signs_s', 0):>7.1f} "
                  f"{t['total_s']:>7.1f} {rec.peak_memory_mb or 0:>6.0f}", flush=True)
            write_json(out / "summary.json", {"recipe": args.recipe, "config": config, "threads": args.threads,
                                              "rows": rows})
    print(f"wrote {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
