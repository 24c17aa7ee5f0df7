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

import math
from dataclasses import asdict, dataclass

import numpy as np

from hidebench.types import HidebenchError

LOSSES = ("amplitude", "intensity", "paper")
INITS = ("spectral", "magnitudes", "aligned")


@dataclass
class RegressionConfig:
    """Knobs of stage 4 (regression) and of the per-pixel sign synchronisation.

    init: 'spectral' (least-squares magnitudes + per-pixel sign synchronisation, ours),
    'magnitudes' (least-squares magnitudes, all signs +), 'aligned' (the paper's start,
    -0.01 everywhere plus tiny noise). loss: see module docstring. steps=0 skips refinement.
    """

    init: str = "spectral"
    loss: str = "amplitude"
    steps: int = 300
    lr: float = 0.01
    fit_noise: bool = True        # model the public patches' energy (and mean) per pixel
    sync_sweeps: int = 10         # greedy max-cut sweeps after the spectral sign vector
    pixel_chunk: int = 512        # positions per batched eigen-decomposition (memory bound)
    device: str = "auto"          # 'auto' (CUDA when present), 'cpu', 'cuda'
    seed: int = 0

    def __post_init__(self):
        if self.init not in INITS:
            raise HidebenchError(f"regression.init must be one of {INITS}, got {self.init!r}")
        if self.loss not in LOSSES:
            raise HidebenchError(f"regression.loss must be one of {LOSSES}, got {self.loss!r}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise HidebenchError(f"regression.steps must be a non-negative integer, got {self.steps}")
        if not self.lr > 0:
            raise HidebenchError(f"regression.lr must be > 0, got {self.lr}")
        if int(self.sync_sweeps) != self.sync_sweeps or self.sync_sweeps < 0:
            raise HidebenchError(f"regression.sync_sweeps must be a non-negative integer, got {self.sync_sweeps}")
        if int(self.pixel_chunk) != self.pixel_chunk or self.pixel_chunk < 1:
            raise HidebenchError(f"regression.pixel_chunk must be a positive integer, got {self.pixel_chunk}")
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


def lambdas_from_key(key, assignment_true_ids: np.ndarray | None = None) -> np.ndarray:
    """Oracle coefficients (E x n_private_slots) in the key's slot order."""
    return key.lambdas[:, : key.n_private_slots].astype(np.float32)


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


def regress(encryptions: np.ndarray, assignment: np.ndarray, lambdas: np.ndarray, n_clusters: int, *,
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

    x_hat, lam_hat, mu, nu, loss_hist = _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress)
    stats["loss_first_last"] = [loss_hist[0], loss_hist[-1]] if loss_hist else []
    stats["n_split"] = int(split.sum())
    return RegressionResult(images=x_hat.reshape((n,) + shape).astype(np.float32), lambdas=lam_hat,
                            noise_mean=mu.reshape(shape).astype(np.float32),
                            noise_energy=nu.reshape(shape).astype(np.float32),
                            stages={k: v.reshape((n,) + shape).astype(np.float32) for k, v in stages.items()},
                            stats=stats)


def _refine(Y, a, lam, split, x0, mu0, nu0, scheme, cfg, dev, progress):
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

    it = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="regression", leave=False)
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
