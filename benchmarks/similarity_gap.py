"""Where the Carlini similarity loses its accuracy between the attacker's data and a release.

    python benchmarks/similarity_gap.py --challenge hidebench-demo/challenge --steps 1500 --pool-draws 1 16

Trains the similarity CNN of `carlini` as the attack does (the release's scheme, the recipe's
aux data and public pool, `similarity.rounds.pool_draws` as given) and prints its pair AUC (does a pair
of encryptions share a private image) on four sets of encryptions shaped like the release
(same n_priv, T, k), each changing one thing:

    aux, own patches        the attacker's aux images with the pool draw it trained on
    private, own patches    the release's private images (from its key) with that pool draw
    private, new patches    the release's private images with a pool draw it never saw
    release                 the release itself

The first step isolates the images, the second the public patches, the third whatever else
differs in the release. Three more columns probe the release itself:

    AdaBN                   its pair AUC with the CNN's BatchNorm statistics re-estimated on the
                            release's own encryptions (test-time adaptation of the normalisation)
    no region negatives     its pair AUC with every negative pair that shares a public region left
                            out: what explaining the reused public patches away could win at most
    region AUC              among negative pairs, how well the score tells region-sharing pairs
                            from the rest (0.5: the patches do not confound the score)

The regions come from regenerating the release from its recipe and key/seed (checked equal to
the release). Needs the challenge's key (a scorer-side diagnostic) and, for pools on data-root
sources, HIDEBENCH_DATA.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def shares(ids, n: int):
    """E x E bool: do two rows of `ids` (E x slots, values in 0..n-1) hold a common value?"""
    from hidebench.attacks.grouping.membership import membership_matrix

    member = membership_matrix(ids, n, np.float32)
    return (member @ member.T) > 0


def pair_auc(z, private_ids, n_images: int) -> float:
    """Pair AUC of embedding rows z (dot products as scores): does a pair share a private image?"""
    from sklearn.metrics import roc_auc_score

    upper = np.triu_indices(len(z), 1)
    return float(roc_auc_score(shares(private_ids, n_images)[upper], (z @ z.T)[upper]))


def region_aucs(z, private_ids, n_images: int, regions) -> tuple[float, float]:
    """(pair AUC with the negatives sharing a public region left out, AUC of region sharing among
    the negatives) of embedding rows z; regions: E x public slots, each slot's region in the
    release's pool."""
    from sklearn.metrics import roc_auc_score

    upper = np.triu_indices(len(z), 1)
    score, pos = (z @ z.T)[upper], shares(private_ids, n_images)[upper]
    region = shares(regions, int(regions.max()) + 1)[upper]
    keep = pos | ~region
    return float(roc_auc_score(pos[keep], score[keep])), float(roc_auc_score(region[~pos], score[~pos]))


def adabn_model(cfg, model, encryptions, batch: int = 256):
    """`model` with the CNN's BatchNorm statistics re-estimated on `encryptions` (their plain
    average: momentum None), everything else as trained."""
    import dataclasses

    import torch

    from hidebench.attacks.grouping.nets import abs_features, arrays_to_state, build_similarity_net, state_to_arrays

    net = arrays_to_state(build_similarity_net(cfg), model.weights, "embed.")
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    feats = abs_features(encryptions)
    net.train()
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            net(torch.from_numpy(feats[i: i + batch]))
    return dataclasses.replace(model, weights={**model.weights, **state_to_arrays(net, "embed.")})


def release_regions(challenge, view, key, data_root):
    """E x public slots: the pool region of each public slot, from regenerating the release."""
    from hidebench.challenge_io import read_manifest
    from hidebench.defenses.challenge import generate
    from hidebench.recipes import recipe_from_dict

    manifest = read_manifest(challenge)
    if not manifest.get("recipe") or key.seed is None:
        raise SystemExit(f"{challenge}: no recipe or key/seed to regenerate its public regions from")
    ch = generate(recipe_from_dict(manifest["recipe"]), seed=key.seed, data_root=data_root, progress=False)
    if ch.public_origin is None or not np.array_equal(ch.view.encryptions, view.encryptions):
        raise SystemExit(f"{challenge}: regenerating it from its recipe and seed does not give its encryptions")
    return ch.public_origin[key.selection[:, key.n_private_slots:], 0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--challenge", required=True, help="a generated challenge folder (with key/)")
    p.add_argument("--steps", type=int, default=600, help="similarity training steps (similarity.embedder.steps)")
    p.add_argument("--pool-draws", type=int, nargs="+", default=[1, 16], help="similarity.rounds.pool_draws values")
    p.add_argument("--seed", type=int, default=0, help="attack seed (as hidebench attack --seed)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)

    import torch

    from hidebench.attacks.attacker_data import AttackerEncryptions, attacker_pool, load_aux
    from hidebench.attacks.carlini.config import CarliniConfig
    from hidebench.attacks.grouping.similarity import encryption_embedder, train_similarity_model
    from hidebench.challenge_io import load_key, load_public, read_manifest
    from hidebench.context import ExecutionContext
    from hidebench.pipeline import stage_seed
    from hidebench.threat import ReleaseThreatModel
    from hidebench.types import ImageSet

    torch.set_num_threads(args.threads)
    ctx = ExecutionContext.from_env(threads=args.threads, progress=False)
    view, key = load_public(args.challenge), load_key(args.challenge)
    if key.private_labels is None:
        raise SystemExit(f"{args.challenge}: the key holds no private_label.npy (needed to re-encrypt its images)")
    threat = ReleaseThreatModel().resolve(read_manifest(args.challenge))
    n = int(key.private.shape[0])
    private = ImageSet(key.private, key.private_labels, [str(c) for c in range(view.labels.shape[1])], "key", "key")
    print(f"{args.challenge}: {len(view)} encryptions, n_priv {n}, T {view.T}; {args.steps} training steps")
    aux = load_aux(threat.aux, ctx, CarliniConfig().aux_max, needed_for="this benchmark")
    unseen = attacker_pool(threat, ctx, stage_seed(args.seed + 1, "pool"))
    regions = release_regions(args.challenge, view, key, ctx.data_root) if view.k > key.n_private_slots else None
    if regions is not None:
        print(f"{len(np.unique(regions))} public regions in the release's {regions.size} public slots")
    print("pool_draws | aux, own patches | private, own patches | private, new patches | release | AdaBN | "
          "no region negatives | region AUC | training")
    for draws in args.pool_draws:
        cfg = CarliniConfig.from_dict({"similarity": {"embedder": {"steps": args.steps}, "rounds": {"pool_draws": draws}}})
        pool = attacker_pool(threat, ctx, stage_seed(args.seed, "pool"), screens=draws)
        t0 = time.perf_counter()
        model = train_similarity_model(view, aux, cfg.similarity, pool=pool,
                                       seed=stage_seed(args.seed, "similarity_model"))
        train_s = time.perf_counter() - t0
        embed_fn = encryption_embedder(cfg.similarity, model)
        aucs = []
        for images, pool_ in ((aux, pool), (private, pool), (private, unseen)):
            att = AttackerEncryptions(view, images, n_images=n, T=view.T, pool=pool_, seed=args.seed + 7)
            sim_view, sim_key = att.encrypt_subset(np.arange(n) if images is private else
                                                   att.rng.choice(len(images), size=n, replace=False))
            aucs.append(pair_auc(embed_fn(sim_view.encryptions), sim_key.private_of(), n))
        z = embed_fn(view.encryptions)
        aucs.append(pair_auc(z, key.private_of(), n))
        adapted = encryption_embedder(cfg.similarity, adabn_model(cfg.similarity, model, view.encryptions))
        aucs.append(pair_auc(adapted(view.encryptions), key.private_of(), n))
        aucs += region_aucs(z, key.private_of(), n, regions) if regions is not None else [float("nan")] * 2
        print(f"{draws} | " + " | ".join(f"{a:.3f}" for a in aucs) + f" | {train_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
