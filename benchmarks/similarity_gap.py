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
differs in the release. Needs the challenge's key (a scorer-side diagnostic) and, for pools on
data-root sources, HIDEBENCH_DATA.
"""
from __future__ import annotations

import argparse
import time


def pair_auc(embed_fn, encryptions, private_ids, n_images: int) -> float:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from hidebench.attacks.grouping.membership import membership_matrix

    z = embed_fn(encryptions)
    member = membership_matrix(private_ids, n_images, np.float32)
    upper = np.triu_indices(len(z), 1)
    return float(roc_auc_score(((member @ member.T) > 0)[upper], (z @ z.T)[upper]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--challenge", required=True, help="a generated challenge folder (with key/)")
    p.add_argument("--steps", type=int, default=600, help="similarity training steps (similarity.embedder.steps)")
    p.add_argument("--pool-draws", type=int, nargs="+", default=[1, 16], help="similarity.rounds.pool_draws values")
    p.add_argument("--seed", type=int, default=0, help="attack seed (as hidebench attack --seed)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)

    import numpy as np
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
    print("pool_draws | aux, own patches | private, own patches | private, new patches | release | training")
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
            aucs.append(pair_auc(embed_fn, sim_view.encryptions, sim_key.private_of(), n))
        aucs.append(pair_auc(embed_fn, view.encryptions, key.private_of(), n))
        print(f"{draws} | " + " | ".join(f"{a:.3f}" for a in aucs) + f" | {train_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
