"""Gradient-matching attacks: (a) time per attack iteration, vectorised vs straightforward;
(b) the results table (batch 1 and 4; none / Mixup k=4 / InstaHide k=4 inside / InstaHide k=6
cross; LeNet; lfw, and CIFAR-10 when HIDEBENCH_DATA is set).

    python benchmarks/bench_gradient.py --out bench_out            # both parts, ~10 min on 1 CPU core
    python benchmarks/bench_gradient.py --part speed --models lenet,convnet,resnet18
    python benchmarks/bench_gradient.py --part table --datasets lfw --batch-sizes 1 --trials 2

(a) times one objective+backward step of the attack (the gradient distance of R restarts and its
gradient w.r.t. the dummy images): impl='func' (torch.func vmap over restarts, flattened
distance) against impl='loop' (autograd per restart, Python loop over parameters).
(b) runs each cell through hidebench.app.harness.run_update_attack (the attack's default config
but for --iterations; seed = trial) and keeps every run's record.json under OUT/runs/.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFENSES = [("none", "inside", 4), ("mixup", "inside", 4), ("instahide", "inside", 4), ("instahide", "cross", 6)]


def speed(models, restarts, reps, device, distance="cosine"):
    from hidebench.attacks.gradient.matching import GradientMatcher
    from hidebench.defenses.client import ClientExperiment
    from hidebench.defenses.federated import client_update, make_batch, make_client_model

    rng = np.random.default_rng(0)
    rows = []
    for name in models:
        model = make_client_model(name, 10, seed=0).to(device)
        imgs = rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
        cfg = ClientExperiment(batch_size=1)
        up = client_update(model, make_batch(imgs, np.array([3]), 10, cfg), cfg, device=device)
        for R in restarts:
            times = {}
            for impl in ("loop", "func"):
                m = GradientMatcher(model, up, distance=distance, impl=impl, device=device)
                X = torch.randn((R, 1, 3, 32, 32), device=device, requires_grad=True)
                Y = torch.full((R, 1, 10), 0.1, device=device)
                t = []
                for i in range(reps + 1):
                    t0 = time.perf_counter()
                    m.loss(X, Y).sum().backward()
                    if device != "cpu":
                        torch.cuda.synchronize()
                    if i:                       # first call is warm-up
                        t.append(time.perf_counter() - t0)
                times[impl] = float(np.median(t))
            row = {"model": name, "restarts": R, "loop_s": times["loop"], "func_s": times["func"],
                   "speedup_loop_over_func": times["loop"] / times["func"], "device": device}
            rows.append(row)
            print(f"  {name:9s} R={R}: loop {times['loop'] * 1e3:8.1f} ms  func {times['func'] * 1e3:8.1f} ms  "
                  f"ratio loop/func {row['speedup_loop_over_func']:.2f}", flush=True)
    return rows


def table(datasets, batch_sizes, attacks, trials, iterations, device, data_root, threads, out: Path):
    """One run_update_attack per cell and trial (seed = trial); the records land in out/runs/."""
    from hidebench.app.harness import run_update_attack
    from hidebench.context import ExecutionContext

    rows = []
    for data in datasets:
        for B in batch_sizes:
            for defense, mode, k in DEFENSES:
                for attack in attacks:
                    recs = []
                    for t in range(trials):
                        exp = {"data": data, "model": "lenet", "defense": defense, "mode": mode, "k": k,
                               "batch_size": B}
                        ctx = ExecutionContext(device=device, threads=threads, data_root=data_root, progress=False,
                                               seed=t)
                        run_dir = out / "runs" / f"{data.replace(':', '-')}_B{B}_{defense}_{mode}_k{k}_{attack}_t{t}"
                        recs.append(run_update_attack(attack, exp, run_dir, config={"iterations": iterations},
                                                      ctx=ctx))
                    m = [r.metrics for r in recs]
                    row = {"data": data, "batch_size": B, "defense": defense, "mode": mode, "k": k, "attack": attack,
                           "trials": trials,
                           "ssim_vs_input": np.mean([x["vs_input"]["ssim"] for x in m]),
                           "psnr_vs_input": np.mean([x["vs_input"]["psnr"] for x in m]),
                           "ssim_vs_private": np.mean([x["vs_private"]["ssim"] for x in m]),
                           "psnr_vs_private": np.mean([x["vs_private"]["psnr"] for x in m]),
                           "ssim_vs_private_in_mix_max": np.mean([x.get("vs_private_in_mix_max_ssim", np.nan)
                                                                  for x in m]),
                           "label_accuracy": np.mean([x["label_accuracy"] for x in m]),
                           "iterations": np.mean([r.stats["iterations"] for r in recs]),
                           "gradient_evaluations": np.mean([r.stats["gradient_evaluations"] for r in recs]),
                           "seconds_per_image": np.mean([r.timings["attack_per_image_s"] for r in recs]),
                           "optimizer": recs[0].stats["optimizer"], "device": recs[0].context["device"]}
                    rows.append(row)
                    print(f"  {data:12s} B={B} {defense:9s} {mode:6s} k={k} {attack:19s} | vs input SSIM "
                          f"{row['ssim_vs_input']:.3f} PSNR {row['psnr_vs_input']:5.2f} | vs private SSIM "
                          f"{row['ssim_vs_private']:.3f} PSNR {row['psnr_vs_private']:5.2f} | labels "
                          f"{row['label_accuracy']:.2f} | {row['iterations']:.0f} it, {row['seconds_per_image']:.1f} s/img",
                          flush=True)
    return rows


def write(rows, out: Path, name: str):
    out.mkdir(parents=True, exist_ok=True)
    if not rows:
        return
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("speed", "table", "all"), default="all")
    p.add_argument("--out", default="bench_gradient_out")
    p.add_argument("--models", default="lenet,convnet,resnet18")
    p.add_argument("--restarts", default="1,4", help="restart counts timed in the speed part")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--datasets", default=None, help="default: lfw, plus cifar10:test when HIDEBENCH_DATA is set")
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--attacks", default="inverting_gradients", help="comma list: inverting_gradients,dlg")
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--iterations", type=int, default=100, help="optimiser steps per attack (the attack's "
                                                                "iterations; L-BFGS on LeNet)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from hidebench.context import torch_device

    device = str(torch_device(a.device))
    out = Path(a.out)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if a.part in ("speed", "all"):
        print("(a) time per attack iteration (objective + backward), loop over parameters vs torch.func:")
        write(speed(a.models.split(","), [int(r) for r in a.restarts.split(",")], a.reps, device), out, "speed")
    if a.part in ("table", "all"):
        data_root = os.environ.get("HIDEBENCH_DATA")
        datasets = a.datasets.split(",") if a.datasets else (["lfw"] + (["cifar10:test"] if data_root else []))
        print(f"(b) results table (LeNet, {a.iterations} L-BFGS steps, {a.trials} trial(s) per cell):")
        write(table(datasets, [int(b) for b in a.batch_sizes.split(",")], a.attacks.split(","), a.trials,
                    a.iterations, device, data_root, a.threads, out), out, "table")
    print(f"wrote {out}/")


if __name__ == "__main__":
    main()
