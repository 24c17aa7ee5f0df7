"""Stage 4 of the Carlini et al. attack: solve for the private images.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramer, "An Attack on
InstaHide: Is Private Learning Possible with Instance Encoding?" (arXiv 2011.05315), Sec. 5.3:
given which private images each encryption mixes (the assignment) and their coefficients
(read from the labels), recover the private images by regression on |encryption|, treating
the public patches' contribution as noise.

Every pixel position is an independent problem over the n private images (the encryption's
sign mask is per pixel), sharing one design (assignment + coefficients) across positions. So
we solve all 32*32*3 positions at once:

* ``magnitudes``: E[e^2] = sum_i l_i^2 x_i^2 + cross terms + (public energy). Dropping the cross
  terms, e^2 is linear in (x_1^2..x_n^2, noise), one least-squares solve for all positions.
* sign synchronisation (signs.py, ``sync_pixel_signs``): per position, a vote on whether two
  images that share an encryption agree in sign, solved spectrally over the graph of images.
* ``refine``: Adam on an amplitude loss with a fitted public-noise model, starting from the
  synchronised estimate (a symmetric start is a saddle point; the paper starts all-negative).
  The paper's loss min((|e|-m)^2, (|e|+m)^2) equals (|e|-|m|)^2, i.e. ``loss='paper'``.

What remains unidentifiable is one sign per pixel position, shared by all images: signs.py.

Coefficients: each private coefficient is read from the label entry of its cluster's class.
When both private images share a class, the label holds only l1 + l2; ``split`` marks those
encryptions and the refinement estimates the split per encryption.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hidebench.types import HidebenchError

LOSSES = ("amplitude", "intensity", "paper")
INITS = ("spectral", "magnitudes", "aligned")
REFINERS = ("altmin", "adam")


@dataclass
class RegressionConfig:
    """Knobs of stage 4 (regression) and of the per-pixel sign synchronisation.

    init: 'spectral' (least-squares magnitudes + per-pixel sign synchronisation, ours),
    'magnitudes' (least-squares magnitudes, all signs +), 'aligned' (the paper's start,
    -0.01 everywhere plus tiny noise). refine: 'altmin' (alternating minimisation for real
    phase retrieval, Netrapalli et al. 2013: fix the sign of each predicted encryption pixel,
    solve the linear least squares; one shared factorisation, converges in tens of steps) or
    'adam' (gradient descent on ``loss``, see module docstring; the paper's method with
    loss='paper', init='aligned'). steps=0 skips refinement.
    """

    init: str = "spectral"
    refine: str = "altmin"
    steps: int = 30
    adam_steps: int = 50          # after altmin: Adam polish on the amplitude loss (0: none)
    loss: str = "amplitude"
    lr: float = 0.01
    fit_noise: bool = True        # model the public patches' energy (and mean) per pixel
    sync_sweeps: int = 10         # greedy max-cut sweeps after the spectral sign vector
    pixel_chunk: int = 512        # positions per batched eigen-decomposition (memory bound)
    device: str = "auto"          # 'auto' (CUDA when present), 'cpu', 'cuda'
    threads: int = 0              # CPU threads for torch during this stage (0: leave torch's setting)
    reassign: int = 5             # rounds of regression-driven reassignment (attacker assignment, cross only)
    reassign_candidates: int = 12  # clusters per labelled class and encryption whose pairs are scored
    margin_weights: bool = True   # after a reassignment, weight rows by their fit margin over the runner-up pair
    seed: int = 0

    def __post_init__(self):
        if self.init not in INITS:
            raise HidebenchError(f"regression.init must be one of {INITS}, got {self.init!r}")
        if self.refine not in REFINERS:
            raise HidebenchError(f"regression.refine must be one of {REFINERS}, got {self.refine!r}")
        if self.loss not in LOSSES:
            raise HidebenchError(f"regression.loss must be one of {LOSSES}, got {self.loss!r}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise HidebenchError(f"regression.steps must be a non-negative integer, got {self.steps}")
        if int(self.adam_steps) != self.adam_steps or self.adam_steps < 0:
            raise HidebenchError(f"regression.adam_steps must be a non-negative integer, got {self.adam_steps}")
        if not self.lr > 0:
            raise HidebenchError(f"regression.lr must be > 0, got {self.lr}")
        if int(self.sync_sweeps) != self.sync_sweeps or self.sync_sweeps < 0:
            raise HidebenchError(f"regression.sync_sweeps must be a non-negative integer, got {self.sync_sweeps}")
        if int(self.pixel_chunk) != self.pixel_chunk or self.pixel_chunk < 1:
            raise HidebenchError(f"regression.pixel_chunk must be a positive integer, got {self.pixel_chunk}")
        if int(self.threads) != self.threads or self.threads < 0:
            raise HidebenchError(f"regression.threads must be a non-negative integer, got {self.threads}")
        if int(self.reassign) != self.reassign or self.reassign < 0:
            raise HidebenchError(f"regression.reassign must be a non-negative integer, got {self.reassign}")
        if int(self.reassign_candidates) != self.reassign_candidates or self.reassign_candidates < 2:
            raise HidebenchError(f"regression.reassign_candidates must be an integer >= 2, got {self.reassign_candidates}")
        if not isinstance(self.margin_weights, bool):
            raise HidebenchError(f"regression.margin_weights must be true or false, got {self.margin_weights!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise HidebenchError(f"regression.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def torch_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HidebenchError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


# ----------------------------------------------------------------------------- coefficients

def lambdas_from_labels(labels: np.ndarray, assignment: np.ndarray, cluster_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Private coefficients per (encryption, slot) from the released labels.

    Slot j of encryption e gets labels[e, class of its cluster]. Where the two clusters share a
    class (or a class is unknown), the label holds only their sum: both slots get half of it
    and ``split`` is True, for the regression to estimate the split.
    Returns (lambdas E x s float32, split E bool).
    """
    labels = np.asarray(labels, dtype=np.float64)
    a = np.asarray(assignment, dtype=np.int64)
    cls = np.asarray(cluster_class, dtype=np.int64)[a]          # E x s
    E, s = a.shape
    known = cls >= 0
    lam = np.zeros((E, s))
    lam[known] = labels[np.nonzero(known)[0], cls[known]]
    # A slot whose class repeats in its row, or is unknown, only knows a shared total.
    shared = ~known
    for i in range(s):
        for j in range(s):
            if i != j:
                shared[:, i] |= known[:, i] & known[:, j] & (cls[:, i] == cls[:, j])
    split = shared.any(axis=1)
    for e in np.nonzero(split)[0]:
        classes = np.unique(cls[e][known[e]])
        for c in classes:                                         # slots of one class share its entry
            same = known[e] & (cls[e] == c)
            lam[e, same] = labels[e, c] / same.sum()
        if (~known[e]).any():                                     # unknown slots share what is left
            rest = max(labels[e].sum() - labels[e, classes].sum(), 0.0)
            lam[e, ~known[e]] = rest / (~known[e]).sum()
    return lam.astype(np.float32), split


# ----------------------------------------------------------------------------- the solver

@dataclass
class RegressionResult:
    images: np.ndarray        # n x H x W x C, signs synchronised within each position (global sign open)
    lambdas: np.ndarray       # E x s, split estimated where ``split``
    noise_mean: np.ndarray    # H x W x C fitted mean of the public contribution per unit public weight
    noise_energy: np.ndarray  # H x W x C fitted variance of the public contribution per unit squared weight
    stages: dict              # intermediate estimates: 'magnitudes', 'synced' (n x H x W x C)
    stats: dict


def _design_sq(assignment, lam, n, pub_w2):
    """E x (n+1) design of the magnitude least squares: l_i^2 at the slot's cluster, public energy."""
    E, s = assignment.shape
    A = np.zeros((E, n + 1))
    for j in range(s):
        np.add.at(A, (np.arange(E), assignment[:, j]), lam[:, j].astype(np.float64) ** 2)
    A[:, n] = pub_w2
    return A


def public_weight(lam: np.ndarray) -> np.ndarray:
    """Total public coefficient per encryption, 1 - sum of private ones (0 for inside-dataset)."""
    return np.clip(1.0 - lam.sum(axis=1), 0.0, 1.0)


def fit_magnitudes(y2: np.ndarray, assignment: np.ndarray, lam: np.ndarray, n: int, *, with_noise: bool = True,
                   ridge: float = 1e-6, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for x_i^2 (and public energy) from e^2, all positions at once.

    y2: E x P squared encryptions; weights: per-encryption weights (None: all 1).
    Returns (u n x P >= 0, noise energy P).
    """
    pw = public_weight(lam)
    A = _design_sq(assignment, lam, n, pw ** 2 if with_noise else np.zeros(len(lam)))
    if not with_noise:
        A = A[:, :n]
    Aw = A if weights is None else A * np.asarray(weights, dtype=np.float64)[:, None]
    AtA = Aw.T @ A
    AtA[np.diag_indices_from(AtA)] += ridge * max(np.trace(AtA) / len(AtA), 1e-12)
    sol = np.linalg.solve(AtA, Aw.T @ y2.astype(np.float64))
    u = np.clip(sol[:n], 0.0, 1.0)
    nu = np.clip(sol[n], 0.0, None) if with_noise else np.zeros(y2.shape[1])
    return u, nu


def regress(*args, **kwargs) -> "RegressionResult":
    """Recover the private images (see _regress); runs with cfg.threads torch threads if set."""
    import torch

    cfg = kwargs.get("cfg") or RegressionConfig()
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _regress(*args, **kwargs)
    finally:
        torch.set_num_threads(old)


def _regress(encryptions: np.ndarray, assignment: np.ndarray, lambdas: np.ndarray, n_clusters: int, *,
            scheme: str = "instahide", split: np.ndarray | None = None, cfg: RegressionConfig | None = None,
            weights: np.ndarray | None = None, progress: bool = False) -> RegressionResult:
    """Recover n_clusters private images from encryptions (E x H x W x C), the assignment
    (E x s cluster ids) and coefficients (E x s). scheme 'mixup' (no sign mask) is linear.
    weights: per-encryption confidence in its assignment (weighted least squares; None: all 1)."""
    import torch

    from attacks.carlini.signs import sync_pixel_signs

    cfg = cfg or RegressionConfig()
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
    rng = np.random.default_rng(cfg.seed)
    stats, stages = {}, {}
    dev = torch_device(cfg.device)
    torch.manual_seed(cfg.seed)

    if scheme == "mixup":
        # e = sum_i l_i x_i + w * mu (+ zero-mean public noise): linear least squares, exact without noise.
        pw = public_weight(lam)
        A = np.zeros((E, n + 1))
        for j in range(a.shape[1]):
            np.add.at(A, (np.arange(E), a[:, j]), lam[:, j])
        A[:, n] = pw
        keep = np.ones(n + 1, dtype=bool)
        keep[n] = pw.max() > 1e-6
        sol, *_ = np.linalg.lstsq(A[:, keep], Y.astype(np.float64), rcond=None)
        x0 = np.clip(sol[:n], -1, 1)
        mu0 = sol[n] if keep[n] else np.zeros(P)
        stages["magnitudes"] = x0
        nu0 = np.zeros(P)
    else:
        y2 = Y.astype(np.float64) ** 2
        u, nu0 = fit_magnitudes(y2, a, lam, n, with_noise=cfg.fit_noise, weights=weights)
        mag = np.sqrt(u)
        stages["magnitudes"] = mag
        mu0 = np.zeros(P)
        if cfg.init == "spectral":
            sgn, sync_stats = sync_pixel_signs(y2, a, lam, u, nu0, sweeps=cfg.sync_sweeps, chunk=cfg.pixel_chunk,
                                               device=dev)
            stats["sync"] = sync_stats
            x0 = sgn * mag
        elif cfg.init == "magnitudes":
            x0 = mag
        else:
            x0 = -0.01 + 1e-4 * rng.standard_normal((n, P))
        stages["synced"] = x0.copy()

    if cfg.refine == "altmin":
        x_hat, lam_hat, mu, nu, loss_hist = _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress,
                                                    weights)
        if cfg.adam_steps:
            stages["altmin"] = x_hat.copy()
            split_after = np.zeros(E, dtype=bool)    # altmin already estimated the splits
            x_hat, lam_hat, mu, nu, h2 = _refine(Y, a, lam_hat, split_after, x_hat, mu, nu, scheme, cfg, dev,
                                                 progress, steps=cfg.adam_steps, weights=weights)
            loss_hist = loss_hist + h2
    else:
        x_hat, lam_hat, mu, nu, loss_hist = _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress,
                                                    steps=cfg.steps, weights=weights)
    stats["loss_first_last"] = [loss_hist[0], loss_hist[-1]] if loss_hist else []
    stats["n_split"] = int(split.sum())
    return RegressionResult(images=x_hat.reshape((n,) + shape).astype(np.float32), lambdas=lam_hat,
                            noise_mean=mu.reshape(shape).astype(np.float32),
                            noise_energy=nu.reshape(shape).astype(np.float32),
                            stages={k: v.reshape((n,) + shape).astype(np.float32) for k, v in stages.items()},
                            stats=stats)


def _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress, steps, weights=None):
    """Adam on the chosen loss over images, public-noise model and split coefficients."""
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
    params = [x] + ([mu, rnu] if cfg.fit_noise else []) + ([logit] if split.any() else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    hist = []
    # per-row weights, mean 1 (the loss keeps its scale)
    wt = torch.ones((E, 1), device=dev) if weights is None else torch.as_tensor(
        np.asarray(weights, np.float32) / max(float(np.mean(weights)), 1e-12), device=dev)[:, None]

    def coefs():
        if not split.any():
            return lam_t
        return torch.where(sp[:, None], torch.softmax(logit, 1) * tot, lam_t)

    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="regression (adam)", leave=False)
    for _ in it:
        opt.zero_grad()
        L = coefs()
        # index_select, not x[idx]: the backward of advanced indexing is index_put_(accumulate=True),
        # which on CPU adds the rows of one cluster with parallel atomics, in an order that varies from
        # run to run (float differences of ~1e-5 that reassign's discrete choices amplify). The
        # backward of index_select, index_add_, sums them in index order.
        m = sum(L[:, j:j + 1] * torch.index_select(x, 0, idx[:, j]) for j in range(s))
        if cfg.fit_noise:
            m = m + pw * mu
        if scheme == "mixup":
            loss = (wt * (y - m) ** 2).mean()
        elif cfg.loss == "paper":
            loss = (wt * (yabs - m.abs()) ** 2).mean()
        elif cfg.loss == "intensity":
            pred2 = m ** 2 + (pw * rnu) ** 2 if cfg.fit_noise else m ** 2
            loss = (wt * (y * y - pred2) ** 2).mean()
        else:
            pred = torch.sqrt(m ** 2 + (pw * rnu) ** 2 + 1e-8) if cfg.fit_noise else m.abs()
            loss = (wt * (yabs - pred) ** 2).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
        hist.append(float(loss.detach()))
    with torch.no_grad():
        L = coefs().cpu().numpy()
    return (x.detach().cpu().numpy(), L.astype(np.float32), mu.detach().cpu().numpy(),
            (rnu.detach() ** 2).cpu().numpy(), hist)


def _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress, weights=None):
    """Alternating minimisation: z = sign(prediction) * |e| (InstaHide) or e (Mixup), then
    [x; mu] = argmin ||A [x; mu] - z||^2 with A the E x (n+1) coefficient design (public weight
    in the last column). Split coefficients are re-estimated by 1-D least squares each step."""
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
    rows = np.arange(E)
    sp_rows = np.nonzero(split)[0]

    def design(L):
        A = np.zeros((E, n + 1))
        for j in range(s):
            np.add.at(A, (rows, a[:, j]), L[:, j])
        A[:, n] = pw if cfg.fit_noise else 0.0
        return A

    theta = torch.as_tensor(np.concatenate([x0, mu0[None]], 0), dtype=torch.float32, device=dev)
    wt = torch.ones((E, 1), device=dev) if weights is None else torch.as_tensor(
        np.asarray(weights, np.float32), device=dev)[:, None]
    hist = []
    it = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="regression (altmin)", leave=False)
    A_np = design(lam_cur)
    for step in it:
        A = torch.as_tensor(A_np, dtype=torch.float32, device=dev)
        pred = A @ theta
        z = y if scheme == "mixup" else torch.where(pred >= 0, yabs, -yabs)
        hist.append(float(((z - pred) ** 2).mean()))
        Aw = A * wt
        AtA = Aw.T @ A
        AtA += 1e-6 * torch.trace(AtA) / len(AtA) * torch.eye(n + 1, device=dev)
        theta = torch.linalg.solve(AtA, Aw.T @ z)
        theta[:n].clamp_(-1, 1)
        if len(sp_rows) and s == 2:
            # l_a = argmin || z - l_a x_a - (tot - l_a) x_b - w mu ||^2 over [0, tot]
            xa, xb = theta[a[sp_rows, 0]], theta[a[sp_rows, 1]]
            pr = A[sp_rows] @ theta
            zz = torch.where(pr >= 0, yabs[sp_rows], -yabs[sp_rows]) if scheme != "mixup" else y[sp_rows]
            tt = torch.as_tensor(tot[sp_rows], dtype=torch.float32, device=dev)[:, None]
            wmu = torch.as_tensor(pw[sp_rows], dtype=torch.float32, device=dev)[:, None] * theta[n][None]
            d = xa - xb
            la = ((zz - tt * xb - wmu) * d).sum(1) / (d * d).sum(1).clamp(min=1e-9)
            la = torch.minimum(torch.maximum(la, torch.zeros_like(la)), tt[:, 0]).cpu().numpy()
            lam_cur[sp_rows, 0] = la
            lam_cur[sp_rows, 1] = tot[sp_rows] - la
            A_np = design(lam_cur)
    th = theta.cpu().numpy()
    return th[:n], lam_cur.astype(np.float32), th[n], np.asarray(nu0), hist


# ----------------------------------------------------------------------------- reassignment

def _unit_centred(a):
    """Rows centred and scaled to unit norm (dot products are Pearson correlations)."""
    a = a - a.mean(-1, keepdim=True)
    return a / (a.norm(dim=-1, keepdim=True) + 1e-9)


def _laplacian(t, shape):
    """4-neighbour Laplacian over the two spatial axes of flattened H x W x C images (edges
    replicated): keeps the fine structure the private images leave in e^2 and drops the smooth
    energy of the public patches."""
    import torch

    x = t.reshape(t.shape[:-1] + tuple(shape))
    up = torch.cat([x[..., :1, :, :], x[..., :-1, :, :]], dim=-3)
    down = torch.cat([x[..., 1:, :, :], x[..., -1:, :, :]], dim=-3)
    left = torch.cat([x[..., :, :1, :], x[..., :, :-1, :]], dim=-2)
    right = torch.cat([x[..., :, 1:, :], x[..., :, -1:, :]], dim=-2)
    return (4 * x - up - down - left - right).reshape(t.shape)


def reassign(encryptions: np.ndarray, labels: np.ndarray, cluster_class: np.ndarray, images: np.ndarray,
             noise_mean: np.ndarray, *, candidates: int = 12, splits: tuple = (0.3, 0.5, 0.7),
             label_eps: float = 1e-6, chunk_elements: int = 2 ** 24,
             device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Re-choose each encryption's pair of clusters from the current recovered images (cross-
    dataset, 2 private slots): an EM-style step in the spirit of k-means.

    The label names the classes of the two private images and their coefficients, so only
    label-consistent pairs are candidates: one cluster of each labelled class (both of the one
    class, with the split of its coefficient tried over `splits`, when the label has a single
    entry); per class the `candidates` clusters whose x^2 correlates best with e^2 (all of them
    when the class has no more). A pair's fit is the correlation over the pixels of L e^2 with
    L m^2, the predicted intensity (m = l_a x_a + l_b x_b + w mu) under L, a 4-neighbour
    Laplacian: the public patches' energy is smooth, the private images' edges are not, and
    correlation ignores offset and scale. Measured with the true images, one encryption alone
    names its exact pair 66% of the time on the CIFAR replica, 52% on faces (without the
    Laplacian: 44% and 29%; squared amplitude error: 32%); repeating regression + reassignment
    pools the evidence of each cluster's encryptions. (Cluster sizes drift apart over the
    rounds -- 28 to 198 encryptions on the replica, 100 expected -- but capping them,
    auction-style, measured no better.)
    Returns (E x 2 cluster ids, E margins: each row's best fit minus its runner-up's, a
    confidence the attack turns into regression weights).
    """
    import torch

    E, n = len(encryptions), len(images)
    dev = torch.device(device)
    shape = np.asarray(encryptions).shape[1:]
    y2 = _unit_centred(_laplacian(torch.as_tensor(np.asarray(encryptions, np.float32).reshape(E, -1) ** 2,
                                                 device=dev), shape))
    X = torch.as_tensor(np.asarray(images, np.float32).reshape(n, -1), device=dev)
    mu = torch.as_tensor(np.asarray(noise_mean, np.float32).reshape(-1), device=dev)
    P = X.shape[1]
    labels = np.asarray(labels, dtype=np.float32)
    sup = labels > label_eps
    cc = np.asarray(cluster_class, dtype=np.int64)
    w = np.clip(1 - labels.sum(1), 0, 1).astype(np.float32)
    unary = (y2 @ _unit_centred(_laplacian(X * X, shape)).T).cpu().numpy()   # E x n: corr(L e^2, L x_c^2)
    out = np.zeros((E, 2), dtype=np.int64)
    best = np.full(E, -np.inf, dtype=np.float32)
    margin = np.zeros(E, dtype=np.float32)

    def members(c, rows):
        """rows x m candidate clusters of class c (unknown-class clusters count as any class):
        all of them, or per row the `candidates` whose x^2 correlates best with e^2."""
        g = np.flatnonzero((cc == c) | (cc < 0))
        if len(g) <= candidates:
            return np.tile(g, (len(rows), 1))
        top = np.argsort(-unary[np.ix_(rows, g)], axis=1, kind="stable")[:, :candidates]
        return g[top]

    combos: dict = {}
    for e, key in enumerate(map(tuple, (np.flatnonzero(r) for r in sup))):
        combos.setdefault(key, []).append(e)
    for key, rows in combos.items():
        rows = np.asarray(rows)
        if len(key) == 2:
            ga, gb = members(key[0], rows), members(key[1], rows)
            ia, ib = np.repeat(np.arange(ga.shape[1]), gb.shape[1]), np.tile(np.arange(gb.shape[1]), ga.shape[1])
            pa, pb = ga[:, ia], gb[:, ib]
            coef = [(labels[:, key[0]], labels[:, key[1]])]
        elif len(key) == 1:
            g = members(key[0], rows)
            ia, ib = np.triu_indices(g.shape[1], 1)
            pa, pb = g[:, ia], g[:, ib]
            coef = [(labels[:, key[0]] * s, labels[:, key[0]] * (1 - s)) for s in splits]
        else:
            continue
        if not pa.shape[1]:
            continue
        step = max(1, chunk_elements // (pa.shape[1] * P))
        for i in range(0, len(rows), step):
            r = rows[i: i + step]
            a_t = torch.as_tensor(pa[i: i + step], device=dev)
            b_t = torch.as_tensor(pb[i: i + step], device=dev)
            wr = torch.as_tensor(w[r], device=dev)[:, None, None]
            fit = None
            for la, lb in coef:
                la_t = torch.as_tensor(la[r], device=dev)[:, None, None]
                lb_t = torch.as_tensor(lb[r], device=dev)[:, None, None]
                m = la_t * X[a_t] + lb_t * X[b_t] + wr * mu
                f = (_unit_centred(_laplacian(m * m, shape)) * y2[r][:, None]).sum(-1)
                fit = f if fit is None else torch.maximum(fit, f)
            fit = torch.where(a_t == b_t, torch.full_like(fit, -np.inf), fit)
            top2 = fit.topk(min(2, fit.shape[1]), dim=1)
            score, j = top2.values[:, 0], top2.indices[:, 0]
            j = j.cpu().numpy()[:, None]
            best[r] = score.cpu().numpy()
            if fit.shape[1] > 1:
                margin[r] = (top2.values[:, 0] - top2.values[:, 1]).cpu().numpy()
            out[r, 0] = np.take_along_axis(pa[i: i + step], j, 1)[:, 0]
            out[r, 1] = np.take_along_axis(pb[i: i + step], j, 1)[:, 0]
    unset = ~np.isfinite(best)            # no candidate pair (a class without clusters): best two by x^2 alone
    if unset.any():
        out[unset] = np.argsort(-unary[unset], 1, kind="stable")[:, :2]
    return out, margin
