"""Training cost of fdn's networks at their default size, per step and extrapolated to the
default number of steps.

    python benchmarks/bench_fdn_training.py --challenge ch/ih-aug --threads 2 --steps 40

Times `--steps` steps of each network fdn trains (its default config, the release's scheme and
T, the recipe's aux data; stand-in public patches, so no pool is screened): the comparative
network (grouping.similarity.comparative), the second graph's group model (on the dense path),
and the fusion-denoising network; prints seconds per step, the time the default step count
would take, and the load average (the machine's other jobs slow every figure). Issue 31 asks
each network to train within 30 minutes on 2 CPU cores at its default size.
"""
from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--challenge", required=True, help="a challenge folder (its scheme and T are used)")
    p.add_argument("--aux", help="aux data (default: the recipe's)")
    p.add_argument("--steps", type=int, default=40, help="steps timed per network")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)

    import torch

    from hidebench.attacks.attacker_data import AttackerEncryptions, load_aux
    from hidebench.attacks.fdn.config import FdnConfig
    from hidebench.attacks.fdn.groups import GroupSampler
    from hidebench.attacks.fdn.nets import FusionNet
    from hidebench.attacks.fdn.training import train_fusion
    from hidebench.attacks.grouping.group_model import ROUND_IMAGES, train_group_model
    from hidebench.attacks.grouping.nets import build_similarity_net
    from hidebench.attacks.grouping.similarity import train_embedder
    from hidebench.challenge_io import load_public, read_manifest
    from hidebench.context import ExecutionContext
    from hidebench.threat import ReleaseThreatModel

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    view = load_public(args.challenge)
    threat = ReleaseThreatModel(aux=args.aux) if args.aux else ReleaseThreatModel()
    threat = threat.resolve(read_manifest(args.challenge))
    ctx = ExecutionContext.from_env(progress=False)
    cfg = FdnConfig()
    sim, fus = cfg.grouping.similarity, cfg.fusion
    rows = []

    def timed(name, default_steps, run):
        t0 = time.perf_counter()
        run()
        per = (time.perf_counter() - t0) / args.steps
        rows.append((name, per, default_steps, per * default_steps))

    aux = load_aux(threat.aux, ctx, cfg.grouping.aux_max)
    data = AttackerEncryptions(view, aux, n_images=sim.rounds.images, T=sim.rounds.T, seed=0)
    c = sim.comparative
    timed("comparative network", c.steps, lambda: train_embedder(
        data, lambda: build_similarity_net(sim), steps=args.steps, batch=sim.batch_size, lr=sim.lr,
        temperature=c.temperature, rounds=max(1, args.steps // sim.rounds.steps), device=cpu, seed=0))
    group_steps = sim.group.steps_for(len(view) > cfg.grouping.dense_max)
    if group_steps:
        rounds = AttackerEncryptions(view, aux, n_images=ROUND_IMAGES, T=int(view.T), seed=2)
        timed("group model (second graph)", group_steps, lambda: train_group_model(
            rounds, width=sim.width, steps=args.steps, batch=sim.batch_size // 2, lr=sim.lr,
            steps_per_round=sim.rounds.steps, device=cpu, seed=0))
    fusion_aux = load_aux(threat.aux, ctx, fus.training.aux_max)
    short = fus.replace(training=fus.training.replace(steps=args.steps))
    net = FusionNet(view.labels.shape[1], features=fus.net.features, width=fus.net.width, depth=fus.net.depth,
                    register=fus.net.registers(view.augment), register_width=fus.net.register_width)
    sampler = GroupSampler(AttackerEncryptions(view, fusion_aux, n_images=fus.groups.round_images, T=int(view.T), seed=0),
                           fus.groups, int(view.T), 0)
    timed("fusion network", fus.training.steps,
          lambda: train_fusion(net, sampler, short, view.labels.shape[1], device=cpu, seed=0, progress=False))

    print(f"release {args.challenge}: T={view.T}, augment={view.augment}; {args.threads} threads; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'network':28s} {'s/step':>8s} {'default steps':>14s} {'extrapolated':>13s}")
    for name, per, steps, total in rows:
        print(f"{name:28s} {per:8.3f} {steps:14d} {total / 60:11.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
