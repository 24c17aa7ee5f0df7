"""Stage 1 of the Carlini et al. attack: which encryptions share a private image?

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramer, "An Attack on
InstaHide: Is Private Learning Possible with Instance Encoding?" (arXiv 2011.05315), Sec. 5.2:
the attacker encrypts images of its own (auxiliary data from the same distribution) with the
public scheme, so it knows which of its encryptions share an image, and trains a network on
|encryption| (the random sign flips destroy everything but magnitudes) to predict that.

Two model forms:
- embedding (default): a small CNN maps |e| to a unit vector; similarity = cosine. Trained
  with a multi-positive contrastive loss (Khosla et al. 2020, SupCon), so that E encryptions
  need E network evaluations and one E x E matrix product. The comparative network of Luo et
  al. (AAAI 2022; method 'comparative') has the same form: its channel-weighted per-channel
  cosine is a dot product of per-encryption embeddings (nets.build_comparative).
- pairwise (the paper's form, a 6-channel CNN on [|e_i|, |e_j|] -> logit): E^2 evaluations
  are too many on a CPU, so it only reranks each encryption's top candidates of the embedding.
Baseline: Pearson correlation of |e| vectors (no training).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.grouping.clustering import top_neighbours
from hidebench.attacks.grouping.config import SimilarityConfig
from hidebench.attacks.grouping.group_model import ROUND_IMAGES, train_group_model
from hidebench.attacks.grouping.membership import membership_matrix
from hidebench.attacks.grouping.nets import (
    abs_features,
    arrays_to_state,
    blend_candidates,
    build_pair_model,
    build_similarity_net,
    embed,
    fit,
    state_to_arrays,
)
from hidebench.pipeline import arrays_field, json_field
from hidebench.types import ImageSet, PublicView

# ----------------------------------------------------------------------------- features

def pearson_embedding(enc: np.ndarray) -> np.ndarray:
    """Rows z with z_i . z_j = Pearson correlation of |e_i| and |e_j| (the no-training baseline)."""
    a = np.abs(np.asarray(enc, dtype=np.float32)).reshape(len(enc), -1)
    a = a - a.mean(axis=1, keepdims=True)
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)).astype(np.float32)


# ----------------------------------------------------------------------------- training

def draw_round(data: AttackerEncryptions) -> tuple[np.ndarray, np.ndarray]:
    """One fresh round of attacker encryptions: (|e| features N x 3 x 32 x 32, membership
    N x n_images bool)."""
    enc, ids = data.draw()
    return abs_features(enc), membership_matrix(ids, data.n_images)


def _supcon_loss(z, member, temperature: float, x=None, pearson_weight: float = 0.0):
    """Multi-positive InfoNCE: each anchor's positives are the encryptions sharing a private image.

    With pearson_weight w > 0 the similarity is (1 - w) cos(z) + w Pearson(|e|): the network then
    learns what the Pearson correlation misses (a residual), and the blend is what stage 2 uses.
    """
    import torch

    m = member.float()
    pos = (m @ m.T) > 0
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos &= ~eye
    sim = z @ z.T
    if pearson_weight > 0:
        p = x.flatten(1)
        p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-6)
        sim = (1 - pearson_weight) * sim + pearson_weight * (p @ p.T)
    logits = sim / temperature
    logits = logits.masked_fill(eye, -1e9)
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    npos = pos.sum(1)
    ok = npos > 0
    loss = -(logp * pos).sum(1)[ok] / npos[ok]
    return loss.mean()


def _batch_rows(rng, member: np.ndarray, batch: int, groups: int) -> np.ndarray:
    """Rows holding any of `groups` random images, so a batch has many positive pairs."""
    g = rng.choice(member.shape[1], size=min(groups, member.shape[1]), replace=False)
    rows = np.flatnonzero(member[:, g].any(axis=1))
    return rng.choice(rows, size=min(batch, len(rows)), replace=False)


def train_embedder(data: AttackerEncryptions, make_model, *, steps: int, batch: int, lr: float,
                   temperature: float, rounds: int, device, seed: int, pearson_weight: float = 0.0,
                   progress: bool = False, desc: str = "similarity: training embedder"):
    """Train an embedding network (make_model(): |e| -> unit rows; the embedding CNN or the
    comparative network) on `rounds` freshly encrypted aux rounds; returns (model, loss history)."""
    import torch

    torch.manual_seed(seed)
    model = make_model().to(device)
    rng = np.random.default_rng(seed)
    groups = max(2, batch // (2 * data.cfg.n_private_slots * data.cfg.T) * 2)
    per_round = max(1, math.ceil(steps / max(rounds, 1)))
    state = {}

    def loss_at(step):
        if step % per_round == 0:
            state["round"] = draw_round(data)
        x, member = state["round"]
        rows = _batch_rows(rng, member, batch, groups)
        xb = torch.from_numpy(x[rows]).to(device)
        mb = torch.from_numpy(member[rows]).to(device)
        return _supcon_loss(model(xb), mb, temperature, xb, pearson_weight)

    losses = fit(model, loss_at, steps=steps, lr=lr, desc=desc, progress=progress)
    return model, losses


def train_pair_model(data: AttackerEncryptions, *, width: int, steps: int, batch: int, lr: float, rounds: int,
                     device, seed: int, progress: bool = False):
    """Train the paper's pairwise classifier on balanced sharing / non-sharing pairs."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed + 1)
    model = build_pair_model(width).to(device)
    rng = np.random.default_rng(seed + 1)
    per_round = max(1, math.ceil(steps / max(rounds, 1)))
    state = {}

    def loss_at(step):
        if step % per_round == 0:
            x, member = draw_round(data)
            state["round"] = (x, member, [np.flatnonzero(member[:, j]) for j in range(member.shape[1])])
        x, member, owners = state["round"]
        half = batch // 2
        a = rng.integers(0, len(x), size=batch)
        b = rng.integers(0, len(x), size=batch)
        for r in range(half):  # positives: a random partner holding one of a's images
            imgs = np.flatnonzero(member[a[r]])
            cand = owners[imgs[rng.integers(len(imgs))]]
            b[r] = cand[rng.integers(len(cand))]
        y = (member[a] & member[b]).any(axis=1) & (a != b)
        xb = torch.from_numpy(np.concatenate([x[a], x[b]], axis=1)).to(device)
        return F.binary_cross_entropy_with_logits(model(xb).squeeze(1), torch.from_numpy(y.astype(np.float32)).to(device))

    losses = fit(model, loss_at, steps=steps, lr=lr, desc="similarity: training pair model", progress=progress)
    return model, losses


# ----------------------------------------------------------------------------- inference

def pair_scores(model, feats: np.ndarray, rows: np.ndarray, cand: np.ndarray, device, batch: int = 512) -> np.ndarray:
    """Pairwise-model logits for (rows[i], cand[i, j]); symmetrised by scoring both orders."""
    import torch

    a = np.repeat(rows, cand.shape[1])
    b = cand.reshape(-1)
    out = np.empty(len(a), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(a), batch):
            fa = torch.from_numpy(feats[a[i: i + batch]]).to(device)
            fb = torch.from_numpy(feats[b[i: i + batch]]).to(device)
            s = model(torch.cat([fa, fb], 1)).squeeze(1) + model(torch.cat([fb, fa], 1)).squeeze(1)
            out[i: i + batch] = (s / 2).cpu().numpy()
    return out.reshape(cand.shape)


def blend_embedding(z: np.ndarray, pearson: np.ndarray, weight: float) -> np.ndarray:
    """Rows whose dot products are (1 - weight) cos(z) + weight Pearson: the blended similarity
    stays an embedding (one E x E product)."""
    if weight <= 0:
        return z
    return np.concatenate([np.sqrt(1 - weight) * z, np.sqrt(weight) * pearson], axis=1).astype(np.float32)


def precision_at(S: np.ndarray, member: np.ndarray, t: int) -> float:
    """Attacker-side check on its own encryptions: fraction of each row's t nearest sharing an image."""
    share = (member.astype(np.float32) @ member.T.astype(np.float32)) > 0
    Sx = S.copy()
    np.fill_diagonal(Sx, -np.inf)
    top = np.argpartition(-Sx, t - 1, axis=1)[:, :t]
    return float(np.take_along_axis(share, top, 1).mean())


def choose_blend(z: np.ndarray, pearson: np.ndarray, member: np.ndarray, t: int,
                 grid=(0.0, 0.25, 0.5, 0.75, 1.0)) -> tuple[float, dict]:
    """Pick the Pearson blend weight maximising precision@t on a held-out attacker round."""
    scores = {w: precision_at(similarity_matrix(blend_embedding(z, pearson, w) if w < 1 else pearson), member, t)
              for w in grid}
    best = max(grid, key=lambda w: (scores[w], -abs(w - 0.5)))
    return best, scores


def query_expansion(z: np.ndarray, k: int, alpha: float = 3.0) -> np.ndarray:
    """alpha-weighted query expansion (Radenovic et al. 2018): each unit row plus its k nearest,
    weighted by similarity^alpha, renormalised. Neighbours mostly hold the same dominant private
    image, so averaging denoises it."""
    if k <= 0:
        return z
    S = similarity_matrix(z)
    m = min(k, len(z) - 1)
    nbr = np.argpartition(-S, m - 1, axis=1)[:, :m]
    w = np.maximum(np.take_along_axis(S, nbr, 1), 0.0) ** alpha
    out = z + np.einsum("ek,ekd->ed", w, z[nbr])
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def similarity_matrix(z: np.ndarray) -> np.ndarray:
    """E x E cosine similarities of unit rows, diagonal set to -inf-like (never a neighbour of itself)."""
    s = z @ z.T
    np.fill_diagonal(s, -2.0)
    return s


def rerank(S: np.ndarray, pair_logits: np.ndarray, cand: np.ndarray, weight: float) -> np.ndarray:
    """Blend pairwise logits into the top candidates of S (`blend_candidates`), kept symmetric."""
    out = blend_candidates(S, pair_logits, cand, weight)
    rows = np.repeat(np.arange(len(S)), cand.shape[1])
    cols = cand.reshape(-1)
    out[cols, rows] = out[rows, cols]
    np.fill_diagonal(out, -2.0)
    return out


# ----------------------------------------------------------------------------- stage functions

@dataclass
class SimilarityModel:
    """Output of stage `similarity_model`: the trained similarity network ('embed.*' weights: the
    embedding CNN or the comparative network, as similarity.method says; the
    pairwise reranker's 'pair.*' and the group model's 'group.*' too when trained), the Pearson
    blend weight to score with, and the training record (loss histories, precision@T of each
    blend weight on held-out attacker encryptions, seconds each network trained)."""

    weights: dict = arrays_field()
    blend: float = json_field(0.0)
    loss_embed: np.ndarray | None = None
    loss_pair: np.ndarray | None = None
    loss_group: np.ndarray | None = None
    val_grid: np.ndarray | None = None
    val_precision: np.ndarray | None = None
    train_s: dict = json_field()

    def summary(self) -> dict:
        first_last = {f"{name}_loss_first_last": [round(float(h[: 20].mean()), 4), round(float(h[-20:].mean()), 4)]
                      for name, h in (("embed", self.loss_embed), ("group", self.loss_group)) if h is not None}
        return {**first_last, "train_s": {k: round(float(v), 1) for k, v in self.train_s.items()},
                "blend_pearson_weight": float(self.blend),
                "attacker_val_precision": {f"{float(k):g}": round(float(v), 4)
                                           for k, v in zip(self.val_grid, self.val_precision)}}


def train_similarity_model(view: PublicView, aux: ImageSet, cfg: SimilarityConfig, *, pool=None, seed: int = 0,
                           group_steps: int = 0, device=None, progress: bool = False) -> SimilarityModel:
    """Train the similarity network of cfg.method (the embedding CNN or the comparative network;
    and, with cfg.pair.rerank, the pairwise model; with group_steps > 0, the group model for
    that many steps: the stage resolves cfg.group.steps) on the attacker's own encryptions of its
    aux images with the release's scheme; choose the Pearson blend on a held-out round. `pool`:
    the attacker's public pool (None: stand-in patches)."""
    import torch

    device = device or torch.device("cpu")
    e, r = cfg.embedder, cfg.rounds
    data = AttackerEncryptions(view, aux, n_images=r.images, T=r.T, pool=pool, seed=seed)
    if cfg.method == "comparative":
        steps, temperature, pw, what = cfg.comparative.steps, cfg.comparative.temperature, 0.0, "comparative network"
    else:
        steps, temperature, pw, what = e.steps, e.temperature, e.pearson_weight, "embedder"
    t0 = time.perf_counter()
    model, losses = train_embedder(data, lambda: build_similarity_net(cfg), steps=steps, batch=cfg.batch_size,
                                   lr=cfg.lr, temperature=temperature, rounds=max(1, steps // r.steps), device=device,
                                   seed=seed, pearson_weight=pw, progress=progress,
                                   desc=f"similarity: training {what}")
    out = SimilarityModel(weights=state_to_arrays(model, "embed."), loss_embed=np.asarray(losses, dtype=np.float32),
                          train_s={cfg.method: time.perf_counter() - t0})
    # Held-out attacker round (fresh coefficients, signs, patches): pick the Pearson blend.
    xv, mv = draw_round(data)
    keep = np.random.default_rng(seed).permutation(len(xv))[: 2000]
    xv, mv = xv[keep], mv[keep]
    zv = embed(model, xv, device)
    pv = xv.reshape(len(xv), -1)
    pv = pv / np.maximum(np.linalg.norm(pv, axis=1, keepdims=True), 1e-6)
    t_val = max(1, int(round(mv.sum(0).mean())) // 2)
    w, val = choose_blend(zv, pv, mv, t_val)
    out.blend = float(np.float32(w if cfg.blend == "auto" else cfg.blend))
    out.val_grid = np.array(sorted(val), dtype=np.float32)
    out.val_precision = np.array([val[k] for k in sorted(val)], dtype=np.float32)
    if cfg.pair.rerank:
        t0 = time.perf_counter()
        pm, pl = train_pair_model(data, width=cfg.width, steps=cfg.pair.steps, batch=cfg.batch_size // 2, lr=cfg.lr,
                                  rounds=max(1, cfg.pair.steps // r.steps), device=device, seed=seed,
                                  progress=progress)
        out.weights.update(state_to_arrays(pm, "pair."))
        out.loss_pair = np.asarray(pl, dtype=np.float32)
        out.train_s["pair"] = time.perf_counter() - t0
    if group_steps:
        t0 = time.perf_counter()
        rounds = AttackerEncryptions(view, aux, n_images=ROUND_IMAGES, T=view.T or r.T, pool=pool, seed=seed + 2)
        gm, gl = train_group_model(rounds, width=cfg.width, steps=group_steps, batch=cfg.batch_size // 2,
                                   lr=cfg.lr, steps_per_round=r.steps, device=device, seed=seed,
                                   progress=progress)
        out.weights.update(state_to_arrays(gm, "group."))
        out.loss_group = np.asarray(gl, dtype=np.float32)
        out.train_s["group"] = time.perf_counter() - t0
    return out


def encryption_embedder(cfg: SimilarityConfig, model: SimilarityModel | None = None, *, device=None):
    """A function from encryptions (N x 32 x 32 x 3) to N x d unit rows whose dot products are
    the similarity before query expansion and reranking: Pearson correlation of |e| without a
    model; with one, the blend of its embedding's cosine and Pearson (N network evaluations)."""
    if model is None:
        return pearson_embedding
    import torch

    device = device or torch.device("cpu")
    net = arrays_to_state(build_similarity_net(cfg), model.weights, "embed.").to(device).eval()
    return lambda enc: blend_embedding(embed(net, abs_features(enc), device), pearson_embedding(enc), float(model.blend))


def release_embedding(view: PublicView, cfg: SimilarityConfig, model: SimilarityModel | None = None, *,
                      device=None) -> np.ndarray:
    """E x d unit rows of the release's encryptions (see `encryption_embedder`)."""
    return encryption_embedder(cfg, model, device=device)(view.encryptions)


def release_similarity(view: PublicView, cfg: SimilarityConfig, model: SimilarityModel | None = None, *,
                       device=None) -> np.ndarray:
    """E x E similarity of the release's encryptions (diagonal -2): `release_embedding`'s dot
    products, optionally query-expanded and reranked by the pairwise model (E * rerank pairwise
    evaluations)."""
    S = similarity_matrix(query_expansion(release_embedding(view, cfg, model, device=device), cfg.query_expansion))
    if model is not None and cfg.pair.rerank:
        import torch

        device = device or torch.device("cpu")
        cand = top_neighbours(S, cfg.pair.rerank)
        pm = arrays_to_state(build_pair_model(cfg.width), model.weights, "pair.").to(device).eval()
        S = rerank(S, pair_scores(pm, abs_features(view.encryptions), np.arange(len(S)), cand, device), cand,
                   cfg.pair.weight)
    return S
