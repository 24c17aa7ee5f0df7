"""Stage 4 of the Carlini et al. attack (arXiv 2011.05315, Sec. 5.3): solve for the private images.

Given which private images each encryption mixes (the grouping) and their coefficients (read
from the labels), recover the private images by regression on |encryption|, treating the
public patches' contribution as noise.

Every pixel position is an independent problem over the n private images (the sign mask is per
pixel), sharing one design (grouping + coefficients, mixing.design) across positions, so all
32*32*3 positions are solved at once:

* magnitudes: E[e^2] = sum_i l_i^2 x_i^2 + cross terms + public energy. Without the cross terms
  e^2 is linear in (x_1^2..x_n^2, noise): one least-squares solve for all positions.
* sign synchronisation (relative_signs.py): per position, a vote on whether two images that share an
  encryption agree in sign, solved spectrally over the graph of images.
* refinement: alternating minimisation (fix the sign of each predicted pixel, solve the linear
  least squares), then Adam on the likelihood of |e| under a fitted public-noise model (loss
  'folded': Gaussian public noise whose variance grows with the encryption's public weight,
  times a per-encryption scale, seen through the unknown sign) plus a colour total-variation
  prior, starting from the synchronised estimate (a symmetric start is a saddle point; the paper
  starts all-negative and minimises min((|e|-m)^2, (|e|+m)^2) = (|e|-|m|)^2, loss 'paper').

What remains unidentifiable is one sign per pixel position, shared by all images: signs.py.
When both private images of an encryption share a class, its label holds only l1 + l2
(`split`); the refinement estimates the split per encryption.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hidebench.attacks.carlini.config import RegressionConfig, SignSyncConfig
from hidebench.attacks.carlini.mixing import design, public_weight, sparse_design
from hidebench.attacks.carlini.relative_signs import sync_pixel_signs, sync_pixel_signs_sparse
from hidebench.progress import bar
from hidebench.types import HidebenchError

# Sparse path: about this many elements per E x positions temporary in the refinement loops.
POSITION_BLOCK_ELEMENTS = 2 ** 22


@dataclass
class RegressionResult:
    images: np.ndarray        # n x H x W x C, signs synchronised within each position (global sign open)
    lambdas: np.ndarray       # E x s, split estimated where ``split``
    noise_mean: np.ndarray    # H x W x C fitted mean of the public contribution per unit public weight
    noise_energy: np.ndarray  # H x W x C fitted variance of the public contribution per unit squared weight
    stages: dict              # intermediate estimates: 'magnitudes', 'synced', 'altmin' (n x H x W x C)
    stats: dict
    timings: dict = field(default_factory=dict)   # seconds per step: magnitudes_s, sign_sync_s, altmin_s, adam_s


def fit_magnitudes(y2: np.ndarray, assignment: np.ndarray, lam: np.ndarray, n: int, *, with_noise: bool = True,
                   ridge: float = 1e-6, weights: np.ndarray | None = None,
                   sparse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for x_i^2 (and public energy) from e^2, all positions at once.

    y2: E x P squared encryptions; weights: per-encryption weights (None: all 1); sparse: build
    the design as a sparse matrix (large releases).
    Returns (u n x P >= 0, noise energy P).
    """
    pw = public_weight(lam)
    A = (sparse_design if sparse else design)(assignment, lam.astype(np.float64) ** 2, n,
                                              pw ** 2 if with_noise else None)
    Aw, AtA = _weighted_gram(A, weights)
    AtA[np.diag_indices_from(AtA)] += ridge * max(np.trace(AtA) / len(AtA), 1e-12)
    sol = np.linalg.solve(AtA, np.asarray(Aw.T @ y2.astype(np.float64)))
    u = np.clip(sol[:n], 0.0, 1.0)
    nu = np.clip(sol[n], 0.0, None) if with_noise else np.zeros(y2.shape[1])
    return u, nu


def _weighted_gram(A, weights):
    """(A with rows scaled by `weights`, the Gram matrix (A w)' A as a dense array); A dense or scipy sparse."""
    if not hasattr(A, "toarray"):
        Aw = A if weights is None else A * np.asarray(weights, dtype=np.float64)[:, None]
        return Aw, Aw.T @ A
    from scipy import sparse

    Aw = A if weights is None else sparse.diags(np.asarray(weights, dtype=np.float64)) @ A
    return Aw, (Aw.T @ A).toarray()


def regress(encryptions: np.ndarray, assignment: np.ndarray, lambdas: np.ndarray, n_clusters: int, *,
            scheme: str = "instahide", split: np.ndarray | None = None, cfg: RegressionConfig | None = None,
            sync: SignSyncConfig | None = None, weights: np.ndarray | None = None, seed: int = 0, device=None,
            progress: bool = False, prior: np.ndarray | None = None, prior_weight: float = 1.0,
            sparse: bool = False, smooth: bool = True) -> RegressionResult:
    """Recover n_clusters private images from encryptions (E x H x W x C), the assignment
    (E x s cluster ids) and coefficients (E x s). scheme 'mixup' (no sign mask) is linear.
    weights: per-encryption confidence in its assignment (weighted least squares; None: all 1).
    seed: the 'aligned' start's noise; device: a torch device (None: CPU). prior: n x H x W x C
    estimates of the images (a learned decoder's) for the sign synchronisation (relative_signs.py).
    sparse: the scalable solvers for many images (sparse designs, sign synchronisation by Lanczos
    steps on the vote graph instead of a dense eigen-solve per position). smooth: apply the image
    prior cfg.tv_weight (False: the reassignment rounds' regressions)."""
    import torch

    cfg = cfg or RegressionConfig()
    sync = sync or SignSyncConfig()
    enc = np.asarray(encryptions, dtype=np.float32)
    a = np.asarray(assignment, dtype=np.int64)
    lam = np.asarray(lambdas, dtype=np.float32)
    E = len(enc)
    if a.ndim != 2 or len(a) != E or lam.shape != a.shape:
        raise HidebenchError(f"assignment {a.shape} and lambdas {lam.shape} must both be E x slots with E={E}")
    if a.min() < 0 or a.max() >= n_clusters:
        raise HidebenchError(f"assignment ids must lie in 0..{n_clusters - 1}")
    split = np.zeros(E, dtype=bool) if split is None else np.asarray(split, dtype=bool)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (E,) or not np.isfinite(weights).all() or weights.min() < 0 or weights.max() <= 0:
            raise HidebenchError(f"weights must be {E} finite non-negative numbers, not all zero")
    shape = enc.shape[1:]
    n, P = n_clusters, int(np.prod(shape))
    Y = enc.reshape(E, P)
    rng = np.random.default_rng(seed)
    stats, stages = {}, {}
    dev = device or torch.device("cpu")
    torch.manual_seed(seed)

    prior = None if prior is None else np.asarray(prior, dtype=np.float32).reshape(n, P)
    timings: dict = {}
    x0, mu0, nu0 = _initial_estimate(Y, a, lam, n, scheme, cfg, sync, weights, rng, dev, stages, stats, timings,
                                     prior=prior, prior_weight=prior_weight, sparse=sparse, seed=seed)
    t0 = time.perf_counter()
    if cfg.refine == "altmin":
        x_hat, lam_hat, mu, nu, loss_hist = _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress,
                                                    weights, sparse=sparse)
        timings["altmin_s"] = time.perf_counter() - t0
        if cfg.adam_steps and scheme != "mixup":     # Mixup: altmin already solved its least squares
            t0 = time.perf_counter()
            stages["altmin"] = x_hat.copy()
            split_after = np.zeros(E, dtype=bool)    # altmin already estimated the splits
            x_hat, lam_hat, mu, nu, h2 = _refine(Y, a, lam_hat, split_after, x_hat, mu, nu, scheme, cfg, dev,
                                                 progress, steps=cfg.adam_steps, weights=weights, sparse=sparse,
                                                 shape=shape, smooth=smooth)
            loss_hist = loss_hist + h2
            timings["adam_s"] = time.perf_counter() - t0
    else:
        x_hat, lam_hat, mu, nu, loss_hist = _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress,
                                                    steps=cfg.steps, weights=weights, sparse=sparse, shape=shape,
                                                    smooth=smooth)
        timings["adam_s"] = time.perf_counter() - t0
    stats["loss_first_last"] = [loss_hist[0], loss_hist[-1]] if loss_hist else []
    stats["n_split"] = int(split.sum())
    return RegressionResult(images=x_hat.reshape((n,) + shape).astype(np.float32), lambdas=lam_hat,
                            noise_mean=mu.reshape(shape).astype(np.float32),
                            noise_energy=nu.reshape(shape).astype(np.float32),
                            stages={k: v.reshape((n,) + shape).astype(np.float32) for k, v in stages.items()},
                            stats=stats, timings=timings)


def _initial_estimate(Y, a, lam, n, scheme, cfg, sync, weights, rng, dev, stages: dict, stats: dict,
                      timings: dict, *, prior=None, prior_weight: float = 1.0, sparse: bool = False, seed: int = 0):
    """The start of the refinement: (images n x P, public mean P, public energy P). Mixup: the
    linear least squares. InstaHide: least-squares magnitudes from e^2, signed by `cfg.init`.
    Records the 'magnitudes' and 'synced' estimates in `stages`, their seconds in `timings`."""
    P = Y.shape[1]
    t0 = time.perf_counter()
    if scheme == "mixup":
        # e = sum_i l_i x_i + w * mu (+ zero-mean public noise): linear least squares, exact without noise.
        pw = public_weight(lam)
        keep = np.ones(n + 1, dtype=bool)
        keep[n] = pw.max() > 1e-6
        if sparse:
            A = sparse_design(a, lam, n, pw)[:, np.flatnonzero(keep)]
            _, AtA = _weighted_gram(A, None)
            sol = np.linalg.lstsq(AtA, np.asarray(A.T @ Y.astype(np.float64)), rcond=None)[0]
        else:
            A = design(a, lam, n, pw)
            sol, *_ = np.linalg.lstsq(A[:, keep], Y.astype(np.float64), rcond=None)
        x0 = np.clip(sol[:n], -1, 1)
        stages["magnitudes"] = x0
        timings["magnitudes_s"] = time.perf_counter() - t0
        return x0, sol[n] if keep[n] else np.zeros(P), np.zeros(P)
    y2 = Y.astype(np.float64) ** 2
    u, nu0 = fit_magnitudes(y2, a, lam, n, with_noise=cfg.fit_noise, weights=weights, sparse=sparse)
    mag = np.sqrt(u)
    stages["magnitudes"] = mag
    timings["magnitudes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cfg.init == "spectral":
        if sparse:
            sgn, stats["sync"] = sync_pixel_signs_sparse(y2, a, lam, u, nu0, steps=sync.lanczos_steps,
                                                         sweeps=sync.sweeps, chunk=sync.pixel_chunk, device=dev,
                                                         prior=prior, prior_weight=prior_weight, seed=seed)
        else:
            sgn, stats["sync"] = sync_pixel_signs(y2, a, lam, u, nu0, sweeps=sync.sweeps, chunk=sync.pixel_chunk,
                                                  device=dev, prior=prior, prior_weight=prior_weight)
        x0 = sgn * mag
    elif cfg.init == "magnitudes":
        x0 = mag
    else:
        x0 = -0.01 + 1e-4 * rng.standard_normal((n, P))
    stages["synced"] = x0.copy()
    timings["sign_sync_s"] = time.perf_counter() - t0
    return x0, np.zeros(P), nu0


def _position_chunk(E: int, P: int, sparse: bool) -> int:
    """Pixel positions per pass of the refinement loops: all at once on the dense path; on the
    sparse path blocks whose E x block temporaries stay near POSITION_BLOCK_ELEMENTS (E x P
    temporaries of a large release are each hundreds of MB, and allocating them afresh at every
    step costs more than the arithmetic)."""
    return P if not sparse else max(1, min(P, POSITION_BLOCK_ELEMENTS // max(E, 1)))


def colour_tv(x, shape):
    """Colour total variation of images (rows of x, each `shape` = H x W x C): the sum over pixels
    of the length of the stacked channels' forward differences (smoothed at 0)."""
    import torch

    img = x.view((-1,) + tuple(shape))
    dv = img[:, 1:, :-1] - img[:, :-1, :-1]
    dh = img[:, :-1, 1:] - img[:, :-1, :-1]
    return torch.sqrt((dv * dv + dh * dh).sum(-1) + 1e-3).sum()


def _folded_nll(yabs, m, var):
    """Negative log-likelihood (up to a constant) of |e| = yabs when e ~ N(m, var) with an
    unknown sign: the folded normal, (yabs - |m|)^2 / 2 var + log(var) / 2 - log(1 + exp(-2 yabs |m| / var))."""
    import torch

    am = m.abs()
    return 0.5 * torch.log(var) + (yabs - am) ** 2 / (2 * var) - torch.nn.functional.softplus(-2 * yabs * am / var)


def _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress, steps, weights=None, sparse=False,
            shape=None, smooth=True):
    """Adam on the chosen loss over images, public-noise model and split coefficients (the loss
    summed over blocks of positions, `_position_chunk`, before each step). Loss 'folded': each
    encryption's noise scale is a parameter too, starting from 1 (at the default lr and steps it
    moves by up to about e^+-1: the encryptions that fit worst weigh less); with `smooth`,
    cfg.tv_weight x the images' colour total variation joins the likelihood."""
    import torch

    E, s = a.shape
    idx = torch.as_tensor(a, device=dev)
    y = torch.as_tensor(Y, device=dev)
    yabs = y.abs()
    lam_t = torch.as_tensor(lam, device=dev)
    tot = lam_t.sum(1, keepdim=True)
    sp = torch.as_tensor(split, device=dev)
    x = torch.tensor(x0, dtype=torch.float32, device=dev, requires_grad=True)
    mu = torch.tensor(mu0, dtype=torch.float32, device=dev, requires_grad=cfg.fit_noise)
    # noise energy kept >= 0 through a square root parameterisation
    rnu = torch.tensor(np.sqrt(np.maximum(nu0, 0)), dtype=torch.float32, device=dev, requires_grad=cfg.fit_noise)
    # split logits: softmax over the slots of a split encryption, starting from the even split
    logit = torch.zeros((E, s), device=dev, requires_grad=bool(split.any()))
    pw = (1 - tot).clamp(min=0)
    folded = cfg.loss == "folded" and scheme != "mixup"
    # loss 'folded': each encryption's log noise scale (its public patches' share of their weight's energy)
    log_scale = torch.zeros((E, 1), device=dev, requires_grad=folded)
    params = [x] + ([mu, rnu] if cfg.fit_noise else []) + ([logit] if split.any() else []) + (
        [log_scale] if folded else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    hist = []
    # per-row weights, mean 1 (the loss keeps its scale)
    wt = torch.ones((E, 1), device=dev) if weights is None else torch.as_tensor(
        np.asarray(weights, np.float32) / max(float(np.mean(weights)), 1e-12), device=dev)[:, None]

    def coefs():
        if not split.any():
            return lam_t
        return torch.where(sp[:, None], torch.softmax(logit, 1) * tot, lam_t)

    P = y.shape[1]
    pc = _position_chunk(E, P, sparse)

    def reduce(t):
        return t.mean() if pc == P else t.sum() / (E * P)

    def floor():
        """The variance every prediction carries beyond its public patches' (model error)."""
        return cfg.noise_floor * (rnu ** 2).mean().detach() + 1e-6

    tv_weight = cfg.tv_weight if smooth and folded else 0.0
    it = bar(range(steps), enabled=progress, desc="regression (adam)", leave=False)
    for _ in it:
        opt.zero_grad()
        total = 0.0
        for p0 in range(0, P, pc):
            c = slice(p0, p0 + pc)
            L = coefs()
            # index_select, not x[idx]: the backward of advanced indexing is index_put_(accumulate=True),
            # which on CPU adds the rows of one cluster with parallel atomics, in an order that varies from
            # run to run (float differences of ~1e-5 that reassign's discrete choices amplify). The
            # backward of index_select, index_add_, sums them in index order.
            m = sum(L[:, j:j + 1] * torch.index_select(x[:, c], 0, idx[:, j]) for j in range(s))
            if cfg.fit_noise:
                m = m + pw * mu[c]
            if scheme == "mixup":
                loss = reduce(wt * (y[:, c] - m) ** 2)
            elif cfg.loss == "paper":
                loss = reduce(wt * (yabs[:, c] - m.abs()) ** 2)
            elif folded:
                var = ((pw * rnu[c]) ** 2 + floor()) * torch.exp(log_scale)
                loss = reduce(wt * _folded_nll(yabs[:, c], m, var))
            elif cfg.loss == "intensity":
                pred2 = m ** 2 + (pw * rnu[c]) ** 2 if cfg.fit_noise else m ** 2
                loss = reduce(wt * (y[:, c] * y[:, c] - pred2) ** 2)
            else:
                pred = torch.sqrt(m ** 2 + (pw * rnu[c]) ** 2 + 1e-8) if cfg.fit_noise else m.abs()
                loss = reduce(wt * (yabs[:, c] - pred) ** 2)
            loss.backward()
            total += float(loss.detach())
        if tv_weight:
            tv = tv_weight * colour_tv(x, shape) / (E * P)
            tv.backward()
            total += float(tv.detach())
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
        hist.append(total)
    with torch.no_grad():
        L = coefs().cpu().numpy()
    return (x.detach().cpu().numpy(), L.astype(np.float32), mu.detach().cpu().numpy(),
            (rnu.detach() ** 2).cpu().numpy(), hist)


class _Design:
    """The alternating minimisation's design on the torch device: dense (the E x (n + 1) array),
    or sparse (kept as each row's slot groups, coefficients and public weight: products by
    gathering and scattering image rows, O(E slots P), the Gram matrix from a scipy sparse
    design). Products with the image estimate, the ridged weighted Gram matrix, the solve."""

    def __init__(self, a, coef, public, n, wt, dev, sparse: bool):
        import torch

        self.sparse, self.n = sparse, n
        if sparse:
            self.a = torch.as_tensor(a, device=dev)
            self.c = torch.as_tensor(coef, dtype=torch.float32, device=dev)
            self.p = torch.as_tensor(np.full(len(a), public) if np.ndim(public) == 0 else public, dtype=torch.float32,
                                     device=dev)
            self.wt = wt
            _, G = _weighted_gram(sparse_design(a, coef, n, public), wt[:, 0].cpu().numpy().astype(np.float64))
            AtA = torch.as_tensor(G, dtype=torch.float32, device=dev)
        else:
            self.A = torch.as_tensor(design(a, coef, n, public), dtype=torch.float32, device=dev)
            self.Aw = self.A * wt
            AtA = self.Aw.T @ self.A
        AtA += 1e-6 * torch.trace(AtA) / len(AtA) * torch.eye(len(AtA), device=dev)
        self.gram = AtA
        if sparse:                      # factorised once: the sparse path solves once per block of positions
            self.lu = torch.linalg.lu_factor(AtA)

    def mul(self, theta, rows=None):
        if not self.sparse:
            return (self.A if rows is None else self.A[rows]) @ theta
        a, c, p = (self.a, self.c, self.p) if rows is None else (self.a[rows], self.c[rows], self.p[rows])
        out = p[:, None] * theta[self.n]
        for j in range(a.shape[1]):
            out = out + c[:, j, None] * theta[a[:, j]]
        return out

    def solve(self, z):
        import torch

        if not self.sparse:
            return torch.linalg.solve(self.gram, self.Aw.T @ z)
        wz = self.wt * z
        rhs = torch.zeros((self.n + 1, z.shape[1]), dtype=z.dtype, device=z.device)
        for j in range(self.a.shape[1]):
            rhs.index_add_(0, self.a[:, j], self.c[:, j, None] * wz)
        rhs[self.n] = (self.p[:, None] * wz).sum(0)
        return torch.linalg.lu_solve(*self.lu, rhs)


def _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress, weights=None, sparse=False):
    """Alternating minimisation: z = sign(prediction) * |e| (InstaHide) or e (Mixup), then
    [x; mu] = argmin ||A [x; mu] - z||^2 with A the E x (n+1) coefficient design (public weight
    in the last column; sparse: as a sparse matrix). Split coefficients are re-estimated by 1-D
    least squares each step."""
    import torch

    E, s = a.shape
    n, P = x0.shape
    y = torch.as_tensor(Y, device=dev)
    pw_t = torch.as_tensor(public_weight(lam), dtype=torch.float32, device=dev)[:, None]
    nu_t = torch.as_tensor(nu0, dtype=torch.float32, device=dev)[None]
    # debiased amplitude: |m + noise| overestimates |m| by the public energy w^2 nu
    yabs = torch.sqrt((y * y - pw_t ** 2 * nu_t).clamp(min=0)) if cfg.fit_noise else y.abs()
    lam_cur = lam.astype(np.float64).copy()
    tot = lam_cur.sum(1)
    pw = public_weight(lam)
    sp_rows = np.nonzero(split)[0]
    wt = torch.ones((E, 1), device=dev) if weights is None else torch.as_tensor(
        np.asarray(weights, np.float32), device=dev)[:, None]

    def design_of(L):
        return _Design(a, L, pw if cfg.fit_noise else 0.0, n, wt, dev, sparse)

    theta = torch.as_tensor(np.concatenate([x0, mu0[None]], 0), dtype=torch.float32, device=dev)
    hist = []
    it = bar(range(cfg.steps), enabled=progress, desc="regression (altmin)", leave=False)
    D = design_of(lam_cur)
    pc = _position_chunk(E, P, sparse)
    for _ in it:
        new, err = torch.empty_like(theta), 0.0
        for p0 in range(0, P, pc):
            c = slice(p0, p0 + pc)
            pred = D.mul(theta[:, c])
            z = y[:, c] if scheme == "mixup" else torch.where(pred >= 0, yabs[:, c], -yabs[:, c])
            err += float(((z - pred) ** 2).mean()) * (min(P, p0 + pc) - p0) / P
            new[:, c] = D.solve(z)
        hist.append(err)
        theta = new
        theta[:n].clamp_(-1, 1)
        if len(sp_rows) and s == 2:
            # l_a = argmin || z - l_a x_a - (tot - l_a) x_b - w mu ||^2 over [0, tot]
            xa, xb = theta[a[sp_rows, 0]], theta[a[sp_rows, 1]]
            pr = D.mul(theta, sp_rows)
            zz = torch.where(pr >= 0, yabs[sp_rows], -yabs[sp_rows]) if scheme != "mixup" else y[sp_rows]
            tt = torch.as_tensor(tot[sp_rows], dtype=torch.float32, device=dev)[:, None]
            wmu = torch.as_tensor(pw[sp_rows], dtype=torch.float32, device=dev)[:, None] * theta[n][None]
            d = xa - xb
            la = ((zz - tt * xb - wmu) * d).sum(1) / (d * d).sum(1).clamp(min=1e-9)
            la = torch.minimum(torch.maximum(la, torch.zeros_like(la)), tt[:, 0]).cpu().numpy()
            lam_cur[sp_rows, 0] = la
            lam_cur[sp_rows, 1] = tot[sp_rows] - la
            D = design_of(lam_cur)
    th = theta.cpu().numpy()
    return th[:n], lam_cur.astype(np.float32), th[n], np.asarray(nu0), hist
