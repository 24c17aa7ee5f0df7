"""Relative signs of the private images at every pixel position, for stage 4 of the Carlini et
al. attack (arXiv 2011.05315).

InstaHide flips the sign of every pixel of an encryption at random, so the attacker sees
|l_a x_a + l_b x_b + public|. The relative sign of two private images at one position is
identifiable: |e| is larger when x_a and x_b agree in sign. Each encryption is a vote on
x_a * x_b (its e^2 minus the fitted magnitudes, = 2 l_a l_b x_a x_b + noise), and the signs
follow from Z2 synchronisation over the graph of private images, per position: the top
eigenvector of the vote matrix (Singer's spectral relaxation), then greedy max-cut sweeps.
One sign per position, shared by all images, stays open (signs.py).
"""
from __future__ import annotations

import numpy as np

from attacks.carlini.mixing import public_weight


def sync_pixel_signs(y2: np.ndarray, assignment: np.ndarray, lam: np.ndarray, u: np.ndarray, nu: np.ndarray, *,
                     sweeps: int = 10, chunk: int = 512, device=None) -> tuple[np.ndarray, dict]:
    """Relative signs (n x P in {-1, +1}) of the private images at every position.

    y2: E x P squared encryptions; u: n x P fitted squared magnitudes; nu: P fitted public
    energy. Vote of encryption e on the pair of its slots (i, j) at position p:
    l_i l_j (y2 - sum_s l_s^2 u_s - w^2 nu), an estimate of 2 (l_i l_j)^2 x_i x_j, so pairs
    mixed with larger coefficients (a clearer signal over the public noise) weigh more.
    """
    import torch

    dev = device or torch.device("cpu")
    E, s = assignment.shape
    n, P = u.shape
    lam64 = lam.astype(np.float64)
    pw = public_weight(lam)
    base = np.zeros((E, P))
    for j in range(s):
        base += lam64[:, j, None] ** 2 * u[assignment[:, j]]
    base += (pw ** 2)[:, None] * nu[None]
    resid = torch.as_tensor(y2 - base, dtype=torch.float32, device=dev)
    pairs = [(i, j) for i in range(s) for j in range(i + 1, s)]
    a = torch.as_tensor(assignment, device=dev)
    flat = torch.cat([a[:, i] * n + a[:, j] for i, j in pairs])
    w = torch.cat([torch.as_tensor(lam64[:, i] * lam64[:, j], dtype=torch.float32, device=dev) for i, j in pairs])
    signs = np.ones((n, P), dtype=np.float32)
    gain = []
    for p0 in range(0, P, chunk):
        p1 = min(P, p0 + chunk)
        votes = torch.cat([resid[:, p0:p1]] * len(pairs)) * w[:, None]       # (E*pairs) x Pc
        W = torch.zeros((p1 - p0, n * n), device=dev)
        W.index_add_(1, flat, votes.T.contiguous())
        W = W.view(p1 - p0, n, n)
        W = W + W.transpose(1, 2)
        W.diagonal(dim1=1, dim2=2).zero_()
        _, vecs = torch.linalg.eigh(W)
        sg = torch.where(vecs[:, :, -1] >= 0, 1.0, -1.0)                   # Pc x n
        obj0 = torch.einsum("pi,pij,pj->p", sg, W, sg)
        obj = obj0.clone()
        for _ in range(sweeps):                                               # greedy max-cut polish
            field = torch.einsum("pij,pj->pi", W, sg)
            # flip the single image per position that gains most (a flip gains -4 s_i field_i)
            g = -4 * sg * field
            best = g.argmax(1)
            better = g.gather(1, best[:, None])[:, 0] > 1e-9
            if not better.any():
                break
            rows = torch.nonzero(better)[:, 0]
            sg[rows, best[rows]] *= -1
            obj = torch.einsum("pi,pij,pj->p", sg, W, sg)
        gain.append(float(((obj - obj0) / obj0.abs().clamp(min=1e-12)).mean()))
        signs[:, p0:p1] = sg.T.cpu().numpy()
    return signs, {"polish_relative_gain": float(np.mean(gain)) if gain else 0.0}
