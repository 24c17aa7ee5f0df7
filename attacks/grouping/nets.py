"""The grouping's networks (Carlini et al., arXiv 2011.05315, Sec. 5.2-5.3): the features they
read (|e|, standardised: the random signs destroy everything but magnitudes), the embedding CNN
and the paper's 6-channel pairwise form (also the second graph's group model), their weights as
arrays for the stage cache, the one training loop (Adam, one-cycle schedule) and batched
inference, and how a model's logits are blended into candidate scores.
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
