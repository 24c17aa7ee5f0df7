"""Self-training of the similarity on the release itself: learn from the release's own groups.

The similarity CNN trains on the attacker's own encryptions (its aux images, its pool draw), and
scores the release's worse than its own held-out ones: the release is a different distribution
(other private images, other public regions). The release is unlabelled data of exactly that
distribution, and the grouping labels it approximately: every encryption sits in the groups the
assignment gave it. Each round here takes each group's most central members (their embedding
closest to the group's mean; a noisy group's outliers are the likeliest wrong members), fine-tunes
the embedding CNN on batches half of the attacker's own encryptions (true memberships, which
anchor it) and half of these release members (pseudo-memberships), with the same contrastive
loss, then the grouping runs again on the new similarity. Pseudo-labelling with a confident
subset is the standard way to adapt a model to an unlabelled target domain (e.g. Lee 2013,
"Pseudo-label"; Xie et al. 2020, "Self-training with noisy student").
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.grouping.config import SelfTrainingConfig
from hidebench.attacks.grouping.membership import match_groups, membership_matrix
from hidebench.attacks.grouping.nets import abs_features, arrays_to_state, build_embedder, embed, fit, state_to_arrays
from hidebench.attacks.grouping.similarity import SimilarityModel, _batch_rows, _supcon_loss, draw_round


def confident_members(z: np.ndarray, assignment: np.ndarray, n: int, keep: float) -> np.ndarray:
    """E x n bool: for every group, the share `keep` of its members whose unit embedding is
    closest to the group's normalised mean embedding (at least two members a group)."""
    M = membership_matrix(assignment, n)
    out = np.zeros_like(M)
    for g in range(n):
        members = np.flatnonzero(M[:, g])
        if len(members) < 2:
            continue
        c = z[members].mean(0)
        c /= max(np.linalg.norm(c), 1e-8)
        score = z[members] @ c
        take = max(2, int(round(keep * len(members))))
        out[members[np.argsort(-score)[:take]], g] = True
    return out


def changed_fraction(old: np.ndarray, new: np.ndarray, n: int) -> float:
    """Share of encryptions whose groups changed between two groupings into n groups, with the
    new groups renamed to the old groups they overlap most (group ids are arbitrary)."""
    rename = match_groups(new, old, n, n)
    return float((np.sort(rename[new], 1) != np.sort(old, 1)).any(1).mean())


def self_train_round(encryptions: np.ndarray, assignment: np.ndarray, n: int, model: SimilarityModel, *,
                     width: int, dim: int, temperature: float, batch: int, cfg: SelfTrainingConfig,
                     attacker: AttackerEncryptions, seed: int, device, progress: bool = False) -> tuple[SimilarityModel,
                                                                                                    dict]:
    """One round: the embedding CNN of `model` fine-tuned on the release's confident members of
    `assignment` (n groups) and on fresh attacker rounds; returns the new model (other weights and
    the blend kept) and the round's statistics."""
    import torch

    torch.manual_seed(seed)
    net = arrays_to_state(build_embedder(width, dim), model.weights, "embed.").to(device)
    feats = abs_features(encryptions)
    conf = confident_members(embed(net.eval(), feats, device), assignment, n, cfg.keep)
    rows_ok = np.flatnonzero(conf.any(1))
    rng = np.random.default_rng(seed)
    half = max(2, batch // 2)
    groups = max(2, half // max(1, int(conf.sum(0).mean())) * 2)
    per_round = max(1, cfg.steps // max(1, cfg.attacker_rounds))
    state = {}

    def loss_at(step):
        if step % per_round == 0:
            state["round"] = draw_round(attacker)
        x, member = state["round"]
        ra = _batch_rows(rng, member, half, groups)
        rr = rows_ok[_batch_rows(rng, conf[rows_ok], half, groups)]
        xa = torch.from_numpy(x[ra]).to(device)
        xr = torch.from_numpy(feats[rr]).to(device)
        la = _supcon_loss(net(xa), torch.from_numpy(member[ra]).to(device), temperature)
        lr_ = _supcon_loss(net(xr), torch.from_numpy(conf[rr]).to(device), temperature)
        return (1 - cfg.release_weight) * la + cfg.release_weight * lr_

    losses = fit(net, loss_at, steps=cfg.steps, lr=cfg.lr, desc="similarity: self-training on the release",
                 progress=progress)
    weights = {**model.weights, **state_to_arrays(net, "embed.")}
    out = SimilarityModel(weights=weights, blend=model.blend, loss_embed=model.loss_embed, loss_pair=model.loss_pair,
                          loss_group=model.loss_group, val_grid=model.val_grid, val_precision=model.val_precision)
    stats = {"confident_members": int(conf.sum()), "rows_used": len(rows_ok),
             "loss_first_last": [round(float(np.mean(losses[:10])), 4), round(float(np.mean(losses[-10:])), 4)]}
    return out, stats
