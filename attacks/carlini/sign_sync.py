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
                     sweeps: int = 10, chunk: int = 512, device=None, prior: np.ndarray | None = None,
                     prior_weight: float = 1.0) -> tuple[np.ndarray, dict]:
    """Relative signs (n x P in {-1, +1}) of the private images at every position.

    y2: E x P squared encryptions; u: n x P fitted squared magnitudes; nu: P fitted public
    energy. Vote of encryption e on the pair of its slots (i, j) at position p:
    l_i l_j (y2 - sum_s l_s^2 u_s - w^2 nu), an estimate of 2 (l_i l_j)^2 x_i x_j, so pairs
    mixed with larger coefficients (a clearer signal over the public noise) weigh more.

    prior (n x P in [-1, 1], optional): an estimate of the images themselves (a learned
    decoder's); it adds a field f_i = prior_weight * prior_i * (image i's total |vote|) to the
    max-cut objective s'Ws + 2 f's, solved with a ghost node carrying the field, so the signs
    come out absolute rather than relative.
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
        f = torch.zeros((p1 - p0, n), device=dev)
        if prior is not None:
            f = prior_weight * torch.as_tensor(prior[:, p0:p1].T, dtype=torch.float32, device=dev) * W.abs().sum(2)
            G = torch.zeros((p1 - p0, n + 1, n + 1), device=dev)               # the ghost node n carries f
            G[:, :n, :n], G[:, :n, n], G[:, n, :n] = W, f, f
            _, vecs = torch.linalg.eigh(G)
            top = vecs[:, :, -1]
            sg = torch.where(top[:, :n] * torch.where(top[:, n:] >= 0, 1.0, -1.0) >= 0, 1.0, -1.0)
        else:
            _, vecs = torch.linalg.eigh(W)
            sg = torch.where(vecs[:, :, -1] >= 0, 1.0, -1.0)                   # Pc x n
        obj0 = torch.einsum("pi,pij,pj->p", sg, W, sg) + 2 * (f * sg).sum(1)
        obj = obj0.clone()
        for _ in range(sweeps):                                               # greedy max-cut polish
            field = torch.einsum("pij,pj->pi", W, sg) + f
            # flip the single image per position that gains most (a flip gains -4 s_i field_i)
            g = -4 * sg * field
            best = g.argmax(1)
            better = g.gather(1, best[:, None])[:, 0] > 1e-9
            if not better.any():
                break
            rows = torch.nonzero(better)[:, 0]
            sg[rows, best[rows]] *= -1
            obj = torch.einsum("pi,pij,pj->p", sg, W, sg) + 2 * (f * sg).sum(1)
        gain.append(float(((obj - obj0) / obj0.abs().clamp(min=1e-12)).mean()))
        signs[:, p0:p1] = sg.T.cpu().numpy()
    return signs, {"polish_relative_gain": float(np.mean(gain)) if gain else 0.0}
