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
    reassign: int = 2             # rounds of regression-driven reassignment (attacker assignment, cross only)
    reassign_candidates: int = 8  # clusters per encryption whose pairs are scored in a round
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
                   ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for x_i^2 (and public energy) from e^2, all positions at once.

    y2: E x P squared encryptions. Returns (u n x P >= 0, noise energy P).
    """
    pw = public_weight(lam)
    A = _design_sq(assignment, lam, n, pw ** 2 if with_noise else np.zeros(len(lam)))
    if not with_noise:
        A = A[:, :n]
    AtA = A.T @ A
    AtA[np.diag_indices_from(AtA)] += ridge * max(np.trace(AtA) / len(AtA), 1e-12)
    sol = np.linalg.solve(AtA, A.T @ y2.astype(np.float64))
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
            progress: bool = False) -> RegressionResult:
    """Recover n_clusters private images from encryptions (E x H x W x C), the assignment
    (E x s cluster ids) and coefficients (E x s). scheme 'mixup' (no sign mask) is linear."""
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
        u, nu0 = fit_magnitudes(y2, a, lam, n, with_noise=cfg.fit_noise)
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
        x_hat, lam_hat, mu, nu, loss_hist = _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress)
        if cfg.adam_steps:
            stages["altmin"] = x_hat.copy()
            split_after = np.zeros(E, dtype=bool)    # altmin already estimated the splits
            x_hat, lam_hat, mu, nu, h2 = _refine(Y, a, lam_hat, split_after, x_hat, mu, nu, scheme, cfg, dev,
                                                 progress, steps=cfg.adam_steps)
            loss_hist = loss_hist + h2
    else:
        x_hat, lam_hat, mu, nu, loss_hist = _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress,
                                                    steps=cfg.steps)
    stats["loss_first_last"] = [loss_hist[0], loss_hist[-1]] if loss_hist else []
    stats["n_split"] = int(split.sum())
    return RegressionResult(images=x_hat.reshape((n,) + shape).astype(np.float32), lambdas=lam_hat,
                            noise_mean=mu.reshape(shape).astype(np.float32),
                            noise_energy=nu.reshape(shape).astype(np.float32),
                            stages={k: v.reshape((n,) + shape).astype(np.float32) for k, v in stages.items()},
                            stats=stats)


def _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress, steps):
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
        m = sum(L[:, j:j + 1] * x[idx[:, j]] for j in range(s))
        if cfg.fit_noise:
            m = m + pw * mu
        if scheme == "mixup":
            loss = ((y - m) ** 2).mean()
        elif cfg.loss == "paper":
            loss = ((yabs - m.abs()) ** 2).mean()
        elif cfg.loss == "intensity":
            pred2 = m ** 2 + (pw * rnu) ** 2 if cfg.fit_noise else m ** 2
            loss = ((y * y - pred2) ** 2).mean()
        else:
            pred = torch.sqrt(m ** 2 + (pw * rnu) ** 2 + 1e-8) if cfg.fit_noise else m.abs()
            loss = ((yabs - pred) ** 2).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
        hist.append(float(loss.detach()))
    with torch.no_grad():
        L = coefs().cpu().numpy()
    return (x.detach().cpu().numpy(), L.astype(np.float32), mu.detach().cpu().numpy(),
            (rnu.detach() ** 2).cpu().numpy(), hist)


def _altmin(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress):
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
        AtA = A.T @ A
        AtA += 1e-6 * torch.trace(AtA) / len(AtA) * torch.eye(n + 1, device=dev)
        theta = torch.linalg.solve(AtA, A.T @ z)
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

def reassign(encryptions: np.ndarray, labels: np.ndarray, cluster_class: np.ndarray, images: np.ndarray,
             noise_mean: np.ndarray, noise_energy: np.ndarray, *, candidates: int = 8,
             label_eps: float = 1e-6) -> np.ndarray:
    """Re-choose each encryption's pair of clusters from the current recovered images (cross-
    dataset, 2 private slots): the `candidates` clusters whose |image| correlates best with
    |e| (among those whose class is in the label's support), then the pair among them whose
    predicted amplitude sqrt((l_a x_a + l_b x_b + w mu)^2 + w^2 nu) fits |e| best, with the
    coefficients read from the labels and the pair required to explain every label class.
    An EM-style step in the spirit of k-means: grouping errors that no image explains move.
    Returns E x 2 cluster ids (the current best pair per encryption)."""
    E = len(encryptions)
    n = len(images)
    Y = np.abs(encryptions.reshape(E, -1)).astype(np.float32)
    X = images.reshape(n, -1).astype(np.float32)
    mu = noise_mean.reshape(-1).astype(np.float32)
    nu = noise_energy.reshape(-1).astype(np.float32)
    sup = labels > label_eps
    cc = np.asarray(cluster_class, dtype=np.int64)
    allowed = sup[:, np.maximum(cc, 0)] | (cc[None] < 0)
    Xa = np.abs(X)
    Xa = (Xa - Xa.mean(1, keepdims=True)) / (Xa.std(1, keepdims=True) + 1e-6)
    Yc = (Y - Y.mean(1, keepdims=True)) / (Y.std(1, keepdims=True) + 1e-6)
    score = Yc @ Xa.T / Y.shape[1]
    score[~allowed] = -np.inf
    m = min(candidates, n)
    cand = np.argsort(-score, 1)[:, :m]
    rows = np.arange(E)
    pw = np.clip(1 - labels.sum(1), 0, 1).astype(np.float32)
    n_sup = sup.sum(1)
    best = np.full(E, np.inf)
    out = np.zeros((E, 2), dtype=np.int64)
    out[:, 0], out[:, 1] = cand[:, 0], cand[:, min(1, m - 1)]
    for i in range(m):
        for j in range(i + 1, m):
            a, b = cand[:, i], cand[:, j]
            ok = np.isfinite(score[rows, a]) & np.isfinite(score[rows, b])
            ca, cb = cc[a], cc[b]
            la, lb = labels[rows, np.maximum(ca, 0)], labels[rows, np.maximum(cb, 0)]
            same = ca == cb
            la, lb = np.where(same, la / 2, la), np.where(same, lb / 2, lb)
            ok &= n_sup == np.where(same, 1, 2)
            if not ok.any():
                continue
            r = np.flatnonzero(ok)
            pred = np.sqrt((la[r, None] * X[a[r]] + lb[r, None] * X[b[r]] + pw[r, None] * mu) ** 2
                           + pw[r, None] ** 2 * nu)
            loss = ((Y[r] - pred) ** 2).mean(1)
            better = loss < best[r]
            rb = r[better]
            best[rb] = loss[better]
            out[rb, 0], out[rb, 1] = a[rb], b[rb]
    return out
