"""The second graph of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.3): score an
encryption against a whole group of encryptions rather than against one at a time.

A group's members all hold one private image, so the mean of their standardised |e| (the
group's template) shows that image's magnitudes with the other images and the public patches
averaged down. A 6-channel CNN (the pairwise model's form, `build_pair_model`) reads
[|e|, template] and predicts whether the encryption holds the group's image. It is trained
like the similarity, on the attacker's own encryptions with the release's scheme and T, where
it knows every group: templates of a random share of an image's encryptions, contaminated
with a random share of other encryptions (the release's groups are impure), against
encryptions that hold the image and encryptions that do not (half of these holding another
image of the same class, the groups a label leaves open).

`group_rescorer` then rescores each release encryption's best candidate groups against
templates of the current assignment (itself left out of the group it belongs to), and the
assignment runs again on the blended scores.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.grouping.assignment import _candidates
from hidebench.attacks.grouping.membership import membership_matrix
from hidebench.attacks.grouping.nets import abs_features, arrays_to_state, blend_candidates, build_pair_model, fit

# Images per training round (each in T encryptions, T the release's): groups as large as the
# release's, rounds small enough to encrypt every steps_per_round steps.
ROUND_IMAGES = 100

# Largest share of wrong members in a training template: the release's groups are impure (their
# assignment accuracy is well below 1), so the model must score against impure templates.
MAX_CONTAMINATION = 0.6


def _standardise(t: np.ndarray) -> np.ndarray:
    """Each template (N x C x H x W) centred and scaled to unit standard deviation."""
    mu = t.mean(axis=(1, 2, 3), keepdims=True)
    sd = t.std(axis=(1, 2, 3), keepdims=True)
    return ((t - mu) / np.maximum(sd, 1e-6)).astype(np.float32)


def training_batch(rng: np.random.Generator, x: np.ndarray, member: np.ndarray, classes: np.ndarray,
                   batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, candidate rows, templates of the images' groups, targets: does the candidate
    hold the image) for one step on one round of attacker encryptions: x (N x 3 x 32 x 32
    features), member (N x n_images), classes (each image's class)."""
    N, n = member.shape
    owners = [np.flatnonzero(member[:, j]) for j in range(n)]
    same = [np.flatnonzero((classes == classes[j]) & (np.arange(n) != j)) for j in range(n)]
    images = rng.integers(0, n, size=batch)
    y = rng.random(batch) < 0.5
    cand = np.empty(batch, dtype=np.int64)
    templates = np.empty((batch,) + x.shape[1:], dtype=np.float32)
    for b, j in enumerate(images):
        own = owners[j]
        if y[b]:
            cand[b] = own[rng.integers(len(own))]
        else:
            pool = owners[same[j][rng.integers(len(same[j]))]] if len(same[j]) and rng.random() < 0.5 \
                else np.arange(N)
            pool = pool[~member[pool, j]]
            cand[b] = pool[rng.integers(len(pool))] if len(pool) else rng.integers(N)
            y[b] = bool(member[cand[b], j])
        rest = own[own != cand[b]]
        m = int(rng.integers(max(1, len(rest) // 2), len(rest) + 1)) if len(rest) else 0
        q = rng.uniform(0, MAX_CONTAMINATION)
        rows = np.concatenate([rng.choice(rest, size=m, replace=False),
                               rng.integers(0, N, size=int(round(q * max(m, 1) / (1 - q))))]).astype(np.int64)
        templates[b] = x[rows].mean(0) if len(rows) else 0.0
    return images, cand, _standardise(templates), y


def train_group_model(data: AttackerEncryptions, *, width: int, steps: int, batch: int, lr: float,
                      steps_per_round: int, device, seed: int, progress: bool = False):
    """Train the group model on fresh rounds of `data` (one every `steps_per_round` steps);
    returns (model, loss history)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed + 2)
    model = build_pair_model(width).to(device)
    rng = np.random.default_rng(seed + 2)
    state = {}

    def loss_at(step):
        if step % steps_per_round == 0:
            idx = rng.choice(len(data.aux), size=data.n_images, replace=False)
            view, key = data.encrypt_subset(idx)
            state["round"] = (abs_features(view.encryptions), membership_matrix(key.private_of(), len(idx)),
                              np.asarray(data.aux.labels)[idx])
        x, member, classes = state["round"]
        _, cand, tmpl, y = training_batch(rng, x, member, classes, batch)
        xb = torch.from_numpy(np.concatenate([x[cand], tmpl], axis=1)).to(device)
        return F.binary_cross_entropy_with_logits(model(xb).squeeze(1), torch.from_numpy(y.astype(np.float32)).to(device))

    losses = fit(model, loss_at, steps=steps, lr=lr, desc="similarity: training group model", progress=progress)
    return model, losses


def group_logits(model, feats: np.ndarray, assignment: np.ndarray, n_groups: int, cand: np.ndarray, device,
                 batch: int = 512) -> np.ndarray:
    """E x m logits of encryption e holding group cand[e, j]'s image, against the template of the
    group's assigned members (e itself left out)."""
    import torch

    E = len(feats)
    G = membership_matrix(assignment, n_groups, np.float32)          # E x n
    flat = feats.reshape(E, -1)
    sums = G.T @ flat                                               # n x P
    counts = G.sum(0)
    rows = np.repeat(np.arange(E), cand.shape[1])
    cols = cand.reshape(-1)
    out = np.empty(len(rows), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r, c = rows[i: i + batch], cols[i: i + batch]
            own = G[r, c][:, None]
            t = (sums[c] - own * flat[r]) / np.maximum(counts[c] - own[:, 0], 1)[:, None]
            t = _standardise(t.reshape((len(r),) + feats.shape[1:]))
            xb = torch.from_numpy(np.concatenate([feats[r], t], axis=1)).to(device)
            out[i: i + batch] = model(xb).squeeze(1).cpu().numpy()
    return out.reshape(cand.shape)


def group_rescorer(encryptions: np.ndarray, weights: dict, *, width: int, candidates: int, weight: float,
                   device=None):
    """rescore(assignment, scores, allowed) -> scores with each row's `candidates` best allowed
    groups blended (weight `weight`) with the group model's logits against the assignment's
    templates; `weights`: the trained model's 'group.*' arrays."""
    import torch

    device = device or torch.device("cpu")
    model = arrays_to_state(build_pair_model(width), weights, "group.").to(device).eval()
    feats = abs_features(encryptions)

    def rescore(assignment: np.ndarray, scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        cand, _ = _candidates(scores, allowed, 1, candidates)
        logits = group_logits(model, feats, assignment, scores.shape[1], cand, device)
        return blend_candidates(scores, logits, cand, weight)

    return rescore
