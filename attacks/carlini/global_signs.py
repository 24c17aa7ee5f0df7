"""Stage 5 of the Carlini et al. attack (arXiv 2011.05315): the one sign per pixel position
that the regression leaves open.

InstaHide multiplies every pixel of an encryption by a random sign; after the per-position
synchronisation (relative_signs.py) the recovered image set is right up to one sign per position
shared by all images (e -> -e leaves everything invariant). ``fix_global_signs`` picks it with
a smoothness prior: neighbouring positions (in space and across colour channels) are correlated
over the image set, an Ising model on the 32 x 32 x 3 grid, solved spectrally then by greedy
flips, with a field from the auxiliary images' per-pixel mean, which also settles the one
remaining flip of the whole set (without aux data: the set's mean red minus blue, positive in
natural photographs). (Carlini et al. fix signs by colour-space heuristics after a
regression from an all-negative start.)
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.carlini.config import SignConfig

# ----------------------------------------------------------------------------- one sign per position

def _grid_edges(shape, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    H, W, C = shape
    ids = np.arange(H * W * C).reshape(H, W, C)
    src, dst = [], []
    offs = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbours == 8 else [])
    for dy, dx in offs:                      # dy >= 0; pair (y, x) with (y + dy, x + dx)
        x0, x1 = max(0, -dx), W - max(0, dx)
        src.append(ids[0:H - dy, x0:x1].ravel())
        dst.append(ids[dy:H, x0 + dx:x1 + dx].ravel())
    for c1 in range(C):                      # colour channels at one location
        for c2 in range(c1 + 1, C):
            src.append(ids[:, :, c1].ravel())
            dst.append(ids[:, :, c2].ravel())
    return np.concatenate(src), np.concatenate(dst)


def aux_statistics(aux_images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-position mean and variance of the auxiliary images (the prior of the global sign)."""
    if aux_images is None or len(aux_images) == 0:
        return None
    x = np.asarray(aux_images, dtype=np.float64)
    return x.mean(0), x.var(0) + 1e-3


# The whole set's mean red minus blue must stand this many standard errors from 0 to decide its
# flip: grey images (LFW) carry no colour, and their recovered sets only noise.
COLOUR_T = 3.0


def _whole_set_vote(X: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
    """Evidence (> 0) that the image set X (n x P) has the right overall sign: the correlation of
    each image's spatial pattern with the aux per-position mean pattern, both with their
    average brightness removed. Brightness alone misleads on small sets, whose images can be
    brighter or darker on average than the aux data."""
    w = ((mean - mean.mean()) / var).reshape(-1)
    return float(((X - X.mean(axis=1, keepdims=True)) @ w).sum())


def fix_global_signs(images: np.ndarray, cfg: SignConfig | None = None, aux_stats=None, *,
                     prior: np.ndarray | None = None, prior_weight: float = 0.0) -> tuple[np.ndarray, dict]:
    """Choose one sign per position (shared by all images) and return the signed images.

    Ising energy: sum over neighbouring positions p~q of J_pq g_p g_q, J_pq the correlation of
    the image set at p and q, plus aux_weight * sum_p h_p g_p with h_p the (normalised)
    log-likelihood gain of sign +1 under the aux per-position Gaussian. With aux,
    `_whole_set_vote` fixes the whole set's sign; without, cfg.colour_flip makes the set redder
    than blue on average where it is clearly coloured (COLOUR_T), or it is left as found. prior (a learned decoder's
    estimate of the same images): a further field, prior_weight times the correlation over the
    image set of the images with the prior at each position (one edge of the model has weight at
    most 1); it then also decides the flip of the whole set.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    cfg = cfg or SignConfig()
    x = np.asarray(images, dtype=np.float64)
    n = len(x)
    shape = x.shape[1:]
    P = int(np.prod(shape))
    X = x.reshape(n, P)
    stats = {}
    if aux_stats is not None:
        m, v = aux_stats
        h = (X * (m.reshape(P) / v.reshape(P))[None]).sum(0)              # gain of g_p = +1 over -1 (/2)
    else:
        h = np.zeros(P)
    if cfg.method == "none":
        return x.astype(np.float32), stats
    if cfg.method == "aux":
        g = np.where(h >= 0, 1.0, -1.0)
        stats["flipped_fraction"] = float((g < 0).mean())
        return (X * g).reshape(x.shape).astype(np.float32), stats
    src, dst = _grid_edges(shape, cfg.neighbours)
    norm = np.linalg.norm(X, axis=0) + 1e-9
    J = (X[:, src] * X[:, dst]).sum(0) / (norm[src] * norm[dst])
    # Scale the field like one edge: h / |X_p| in units of the per-image-set norm.
    hs = cfg.aux_weight * h / (norm * max(np.sqrt(n), 1.0))
    D = None
    if prior is not None:
        D = np.asarray(prior, dtype=np.float64).reshape(n, P)
        hs = hs + prior_weight * (X * D).sum(0) / (norm * (np.linalg.norm(D, axis=0) + 1e-9))
    M = sp.coo_matrix((np.concatenate([J, J]), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
                      shape=(P, P)).tocsr()
    # spectral solution of the homogeneous problem: augment with a ghost node carrying the field
    Mg = sp.bmat([[M, sp.csr_matrix(hs[:, None])], [sp.csr_matrix(hs[None, :]), None]]).tocsr()
    try:
        _, vec = eigsh(Mg, k=1, which="LA", v0=np.ones(P + 1))
        g = np.where(vec[:P, 0] * np.sign(vec[P, 0] or 1.0) >= 0, 1.0, -1.0)
    except Exception:  # ARPACK non-convergence: fall back to the field / all +1
        g = np.where(hs >= 0, 1.0, -1.0)

    def energy(g):
        return float(g @ (M @ g)) / 2 + float(hs @ g)

    e0 = energy(g)
    indptr, indices, data = M.indptr, M.indices, M.data
    sweeps = 0
    for _ in range(cfg.sweeps):
        sweeps += 1
        changed = 0
        for p in range(P):
            f = data[indptr[p]:indptr[p + 1]] @ g[indices[indptr[p]:indptr[p + 1]]] + hs[p]
            if f * g[p] < 0:
                g[p] = -g[p]
                changed += 1
        if not changed:
            break
    if D is not None:
        if float((X * g * D).sum()) < 0:
            g = -g
    elif aux_stats is not None:
        # the pairwise term is invariant under flipping the whole set: let the aux prior decide
        if _whole_set_vote(X * g, *aux_stats) < 0:
            g = -g
    elif cfg.colour_flip and shape[-1] == 3:
        signed = (X * g).reshape(x.shape)
        rb = (signed[..., 0] - signed[..., 2]).reshape(n, -1).mean(1)          # per image
        t = float(rb.mean() / (rb.std() / np.sqrt(n) + 1e-12)) if n > 1 else 0.0
        stats["red_minus_blue_t"] = abs(t)
        if t < -COLOUR_T:          # clearly bluer than red: the set is upside down
            g = -g
    stats.update({"energy_spectral": e0, "energy_final": energy(g), "flipped_fraction": float((g < 0).mean()),
                  "sweeps": sweeps})
    return (X * g).reshape(x.shape).astype(np.float32), stats
