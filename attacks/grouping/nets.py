"""The grouping's networks (Carlini et al., arXiv 2011.05315, Sec. 5.2-5.3): the features they
read (|e|, standardised: the random signs destroy everything but magnitudes), the embedding CNN,
the comparative network of Luo et al. (AAAI 2022) in embedding form, and the paper's 6-channel
pairwise form (also the second graph's group model), their weights as arrays for the stage
cache, the one training loop (Adam, one-cycle schedule) and batched inference, and how a
model's logits are blended into candidate scores.
"""
from __future__ import annotations

import numpy as np


def abs_features(enc: np.ndarray) -> np.ndarray:
    """|e| as float32 NCHW, standardised per image (the net sees relative magnitudes only)."""
    a = np.abs(np.asarray(enc, dtype=np.float32)).transpose(0, 3, 1, 2)
    mu = a.mean(axis=(1, 2, 3), keepdims=True)
    sd = a.std(axis=(1, 2, 3), keepdims=True)
    return np.ascontiguousarray((a - mu) / np.maximum(sd, 1e-6), dtype=np.float32)


def _conv_trunk(in_ch: int, width: int):
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(*block(in_ch, w), *block(w, w), nn.MaxPool2d(2),          # 16x16
                         *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
                         *block(2 * w, 4 * w), nn.MaxPool2d(2),                    # 4x4
                         nn.Flatten())


def build_embedder(width: int, dim: int):
    """|e| (3 x 32 x 32) -> unit vector of size dim."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = _conv_trunk(3, width)
            self.head = nn.Linear(4 * width * 16, dim)

        def forward(self, x):
            return F.normalize(self.head(self.trunk(x)), dim=1)

    return Embedder()


def build_comparative(width: int, blocks: int, grid: int):
    """The comparative network of Luo, Xiao, Wu, Liu, Ooi, "Fusion-denoising attack on InstaHide
    with data augmentation" (AAAI 2022), in a form whose pair score is a dot product.

    The paper's siamese CNN compares two |encryptions| channel by channel: the cosine similarity
    of the two feature maps of each channel, taken over all positions, then a learned weighting
    of the channels. Comparing whole maps of coarse features tolerates the shifts and flips that
    data augmentation puts between two encryptions of one image. Here the trunk (a stride-2 stem,
    as the paper's subsampled branch, then `blocks` residual blocks of `width` channels) is
    average-pooled to a `grid` x `grid` map per channel; each channel's map is centred and
    L2-normalised, and scaled by sqrt(w_c) with non-negative channel weights w = softmax(logits)
    (summing to 1). So the embedding g has unit norm and

        <g_i, g_j> = sum_c w_c cos(f_c(i), f_c(j)),

    the paper's weighted per-channel cosine, for E encryptions in E network evaluations and one
    E x E product. (The paper's head is a free linear layer on the cosines and a second,
    centre-crop branch; a free sign would break the dot-product form, and one branch halves the
    cost.)"""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width))

        def forward(self, x):
            return F.relu(x + self.body(x))

    class Comparative(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                       nn.ReLU(inplace=True),
                                       nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                       nn.ReLU(inplace=True), *[Residual() for _ in range(blocks)])
            self.pool = nn.AdaptiveAvgPool2d(grid)
            self.channel_logits = nn.Parameter(torch.zeros(width))

        def channel_weights(self):
            """The non-negative channel weights w_c (summing to 1)."""
            return torch.softmax(self.channel_logits, 0)

        def channel_maps(self, x):
            """B x width x grid^2: each channel's pooled map, centred and L2-normalised."""
            f = self.pool(self.trunk(x)).flatten(2)
            return F.normalize(f - f.mean(2, keepdim=True), dim=2)

        def forward(self, x):
            return (self.channel_maps(x) * self.channel_weights().sqrt()[None, :, None]).flatten(1)

    return Comparative()


def build_similarity_net(cfg):
    """The similarity network of a SimilarityConfig's method: the embedding CNN ('cnn') or the
    comparative network ('comparative'); rows of unit norm whose dot products are the score."""
    if cfg.method == "comparative":
        c = cfg.comparative
        return build_comparative(c.width, c.blocks, c.grid)
    return build_embedder(cfg.width, cfg.embedder.dim)


def build_pair_model(width: int):
    """[|e_i|, |e_j|] (6 x 32 x 32) -> logit that they share a private image (the paper's form)."""
    import torch.nn as nn

    return nn.Sequential(_conv_trunk(6, width), nn.Linear(4 * width * 16, 64), nn.ReLU(inplace=True),
                         nn.Linear(64, 1))


def state_to_arrays(model, prefix: str) -> dict:
    return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def arrays_to_state(model, arrays: dict, prefix: str):
    import torch

    state = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model


def fit(model, loss_at, *, steps: int, lr: float, desc: str, progress: bool = False) -> list[float]:
    """Adam at peak learning rate `lr` on a one-cycle schedule for `steps` steps of
    loss_at(step) (a scalar tensor); the model left in eval mode. Returns the loss history."""
    import torch

    from hidebench.progress import bar

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    losses = []
    model.train()
    for step in bar(range(steps), enabled=progress, desc=desc, leave=False):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def embed(model, feats: np.ndarray, device, batch: int = 512) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            out.append(model(torch.from_numpy(feats[i: i + batch]).to(device)).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def blend_candidates(scores: np.ndarray, logits: np.ndarray, cand: np.ndarray, weight: float) -> np.ndarray:
    """`scores` with its entries (row e, column cand[e, j]) blended with a model's logits
    (E x m), other entries untouched. The blend is on a common scale: both are z-scored over the
    candidate entries and the result is mapped back to the scale of the scores' candidate entries."""
    out = scores.copy()
    rows = np.repeat(np.arange(len(scores)), cand.shape[1])
    cols = cand.reshape(-1)
    s0 = scores[rows, cols]
    p = logits.reshape(-1)
    zs = (s0 - s0.mean()) / max(s0.std(), 1e-8)
    zp = (p - p.mean()) / max(p.std(), 1e-8)
    out[rows, cols] = ((1 - weight) * zs + weight * zp) * s0.std() + s0.mean()
    return out
