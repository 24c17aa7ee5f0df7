"""Relative signs of the private images at every pixel position, for stage 4 of the Carlini et
al. attack (arXiv 2011.05315).

InstaHide flips the sign of every pixel of an encryption at random, so the attacker sees
|l_a x_a + l_b x_b + public|. The relative sign of two private images at one position is
identifiable: |e| is larger when x_a and x_b agree in sign. Each encryption is a vote on
x_a * x_b (its e^2 minus the fitted magnitudes, = 2 l_a l_b x_a x_b + noise), and the signs
follow from Z2 synchronisation over the graph of private images, per position: the top
eigenvector of the vote matrix (Singer's spectral relaxation), then greedy max-cut sweeps.
One sign per position, shared by all images, stays open (global_signs.py).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from hidebench.attacks.carlini.mixing import public_weight


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
    n, P = u.shape
    s = assignment.shape[1]
    lam64 = lam.astype(np.float64)
    resid = _vote_residuals(y2, assignment, lam, u, nu, dev)
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


def sync_pixel_signs_sparse(y2: np.ndarray, assignment: np.ndarray, lam: np.ndarray, u: np.ndarray, nu: np.ndarray,
                            *, steps: int = 30, sweeps: int = 10, chunk: int = 512, device=None,
                            prior: np.ndarray | None = None, prior_weight: float = 1.0,
                            seed: int = 0) -> tuple[np.ndarray, dict]:
    """`sync_pixel_signs` for many images: the same votes and objective, with the vote matrix
    kept as its edge list (one edge per encryption and slot pair: O(E P) per product instead of
    an n x n matrix and an O(n^3) eigen-solve per position). The top eigenvector comes from
    `steps` Lanczos steps per position (`top_eigenvector`), then `sweeps` parallel greedy
    sweeps: every image whose flip gains flips with probability 1/2 (a damped parallel max-cut
    polish), a sweep kept per position only where the objective rises."""
    import torch

    dev = device or torch.device("cpu")
    n, P = u.shape
    s = assignment.shape[1]
    lam64 = lam.astype(np.float64)
    resid = _vote_residuals(y2, assignment, lam, u, nu, dev)
    pairs = [(i, j) for i in range(s) for j in range(i + 1, s)]
    a = torch.as_tensor(assignment, device=dev)
    src = torch.cat([a[:, i] for i, _ in pairs])
    dst = torch.cat([a[:, j] for _, j in pairs])
    loop = src == dst                   # a group twice in one row votes on nothing
    w = torch.cat([torch.as_tensor(lam64[:, i] * lam64[:, j], dtype=torch.float32, device=dev) for i, j in pairs])
    w[loop] = 0.0
    gen = torch.Generator(device="cpu").manual_seed(int(seed) % (2 ** 63))
    signs = np.ones((n, P), dtype=np.float32)
    gain = []
    for p0 in range(0, P, chunk):
        p1 = min(P, p0 + chunk)
        V = torch.cat([resid[:, p0:p1]] * len(pairs)) * w[:, None]          # edges x Pc
        mul = partial(_edge_product, V, src, dst)                           # x -> W x, x: n x Pc
        f = torch.zeros((n, p1 - p0), device=dev)
        if prior is not None:                                               # the field scales with |vote| per image
            deg = torch.zeros_like(f)
            deg.index_add_(0, src, V.abs())
            deg.index_add_(0, dst, V.abs())
            f = prior_weight * torch.as_tensor(prior[:, p0:p1], dtype=torch.float32, device=dev) * deg
        # the ghost node (last row) carries the prior's field f: G = [[W, f], [f', 0]]
        top = top_eigenvector(partial(_with_ghost, mul, f), torch.randn((n + 1, p1 - p0), generator=gen).to(dev),
                              steps)
        x, g = top[:n], top[n:]
        sg = torch.where(x * torch.where(g >= 0, 1.0, -1.0) >= 0, 1.0, -1.0) if prior is not None else \
            torch.where(x >= 0, 1.0, -1.0)
        obj0 = _cut_objective(mul, f, sg)
        obj = obj0.clone()
        for _ in range(sweeps):
            field = mul(sg) + f
            better = (-4 * sg * field > 1e-9) & (torch.rand(sg.shape, generator=gen).to(dev) < 0.5)
            if not better.any():
                break
            trial = torch.where(better, -sg, sg)
            new = _cut_objective(mul, f, trial)
            up = new > obj                                                  # keep a sweep only where it helps
            sg = torch.where(up[None], trial, sg)
            obj = torch.where(up, new, obj)
        gain.append(float(((obj - obj0) / obj0.abs().clamp(min=1e-12)).mean()))
        signs[:, p0:p1] = sg.cpu().numpy()
    return signs, {"polish_relative_gain": float(np.mean(gain)) if gain else 0.0, "solver": "lanczos"}


def _vote_residuals(y2, assignment, lam, u, nu, dev):
    """E x P: e^2 minus the fitted magnitudes and public energy, sum_s l_s^2 u_s + w^2 nu
    (what is left is the cross terms: the votes on the relative signs), float32 on `dev`."""
    import torch

    lam64 = lam.astype(np.float64)
    base = np.zeros(y2.shape)
    for j in range(assignment.shape[1]):
        base += lam64[:, j, None] ** 2 * u[assignment[:, j]]
    base += (public_weight(lam) ** 2)[:, None] * nu[None]
    return torch.as_tensor(y2 - base, dtype=torch.float32, device=dev)


def _edge_product(V, src, dst, x):
    """W x for the vote matrix W given as edges (src, dst) with per-position weights V."""
    import torch

    out = torch.zeros_like(x)
    out.index_add_(0, src, V * x[dst])
    out.index_add_(0, dst, V * x[src])
    return out


def _with_ghost(mul, f, v):
    """[[W, f], [f', 0]] v: W extended by a ghost node (the last row) coupled to every image by f."""
    import torch

    n = len(f)
    return torch.cat([mul(v[:n]) + f * v[n:], (f * v[:n]).sum(0, keepdim=True)])


def _cut_objective(mul, f, sg):
    """s'Ws + 2 f's per position."""
    return (sg * mul(sg)).sum(0) + 2 * (f * sg).sum(0)


def top_eigenvector(op, v0, steps: int):
    """Top eigenvector of a symmetric operator for a batch of independent problems (the columns
    of v0, m x b; op maps m x b to m x b): Rayleigh-Ritz on the `steps`-dimensional Krylov
    space of each column (Lanczos with full reorthogonalisation), its top Ritz vector."""
    import torch

    def unit(v):
        return v / torch.linalg.vector_norm(v, dim=0, keepdim=True).clamp(min=1e-30)

    steps = min(steps, len(v0))                                      # the Krylov space is at most m-dimensional
    Q, AQ = [unit(v0)], []
    for j in range(steps):
        AQ.append(op(Q[-1]))
        if j == steps - 1:
            break
        w = AQ[-1]
        Qs = torch.stack(Q)                                          # j x m x b
        for _ in range(2):                                           # twice is enough
            w = w - torch.einsum("jmb,jb->mb", Qs, torch.einsum("jmb,mb->jb", Qs, w))
        Q.append(unit(w))
    Qs, AQs = torch.stack(Q), torch.stack(AQ)
    H = torch.einsum("imb,jmb->bij", Qs, AQs)
    _, vecs = torch.linalg.eigh((H + H.transpose(1, 2)) / 2)
    return torch.einsum("jmb,bj->mb", Qs, vecs[:, :, -1])
