"""The attacker's own data, shared by every learned attack on a release.

* ``load_aux``: the auxiliary images a threat model grants (a strided, class-balanced subset).
* ``attacker_pool``: the attacker's own draw from the public pool the release's recipe names
  (same source and SIFT filter, its own random regions; never the release's patches).
* ``AttackerEncryptions``: the attacker encrypting its aux images with the release's public
  scheme, so it knows which of its own encryptions share an image -- the training data of
  learned similarity models (Carlini et al., arXiv 2011.05315, Sec. 5.2).

Data roots come from the ExecutionContext, never from the environment here.
"""
from __future__ import annotations

import numpy as np

from hidebench.defenses.instahide import encrypt
from hidebench.scheme import EncryptionConfig
from hidebench.types import HidebenchError, ImageSet, PublicView

# Public patches made per round of attacker encryptions, at most.
MAX_PUBLIC_PATCHES = 4096


def load_aux(spec: str | None, ctx, max_images: int, *, needed_for: str = "this attack") -> ImageSet:
    """At most max_images images of the aux source `spec`, evenly strided over the source (its
    classes are stored in blocks or cycles, so a stride keeps them balanced)."""
    from hidebench.data import load_source, source_size

    if not spec:
        raise HidebenchError(f"{needed_for} needs auxiliary images, but the threat model grants none "
                             "(give aux data, e.g. --aux lfw[1::2], or choose an option that needs none)")
    n = source_size(spec, data_root=ctx.data_root)
    m = min(n, int(max_images))
    idx = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
    return load_source(spec, data_root=ctx.data_root, indices=idx, progress=ctx.progress)


def attacker_pool(threat, ctx, seed: int, screens: int = 1):
    """The attacker's own draw from the public pool, or None when the threat model does not
    grant it (threat.public_pool false, or the release names no pool). screens > 1 screens that
    many times the recipe's regions, so that rounds of attacker encryptions can each take fresh
    ones (`AttackerEncryptions`)."""
    if not (threat.public_pool and threat.pool):
        return None
    from hidebench.data import PoolConfig, build_pool

    return build_pool(PoolConfig.from_dict(dict(threat.pool), where="threat.pool"), np.random.default_rng(seed),
                      data_root=ctx.data_root, progress=ctx.progress, screens=screens)


# ----------------------------------------------------------------------------- stand-in patches

def pink_noise(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """n colour 1/f^beta noise images in [-1, 1] (beta ~ U[1, 2.5], random colour mixing): unique,
    textured stand-ins for public patches, with natural-image-like spectra."""
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    f[0, 0] = 1.0
    beta = rng.uniform(1.0, 2.5, size=(n, 1, 1, 1))
    spec = (rng.standard_normal((n, 3, size, size // 2 + 1)) + 1j * rng.standard_normal((n, 3, size, size // 2 + 1)))
    x = np.fft.irfft2(spec / f[None, None] ** (beta / 1.0), s=(size, size)).transpose(0, 2, 3, 1)
    mix = rng.normal(0.0, 0.3, size=(n, 3, 3)) + np.eye(3)[None]        # correlated colour channels
    x = np.einsum("nhwc,ncd->nhwd", x, mix)
    lo, hi = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    return (2 * (x - lo) / np.maximum(hi - lo, 1e-8) - 1).astype(np.float32)


def augmented(rng: np.random.Generator, imgs: np.ndarray, n: int) -> np.ndarray:
    """n patches from imgs, each randomly rotated by 90-degree steps, mirrored, rolled, colour-
    permuted and contrast-scaled, so few are exact repeats."""
    src = imgs[rng.integers(0, len(imgs), size=n)].copy()
    for r in range(4):
        sel = rng.random(n) < 0.25
        src[sel] = np.rot90(src[sel], r, axes=(1, 2))
    flip = rng.random(n) < 0.5
    src[flip] = src[flip, :, ::-1]
    sh = rng.integers(0, src.shape[1], size=2)
    src = np.roll(src, tuple(int(v) for v in sh), axis=(1, 2))
    src = src[..., rng.permutation(3)]
    gain = rng.uniform(0.5, 1.0, size=(n, 1, 1, 1))
    return np.clip(src * gain, -1, 1).astype(np.float32)


# ----------------------------------------------------------------------------- re-encryption

class AttackerEncryptions:
    """Rounds of fresh encryptions of random aux subsets with the release's public scheme (k,
    mode, scheme, c1, c2, augmentation; T = `T`), and which of the round's images each one holds.

    Public patches come from the attacker's pool when the threat model grants it. A pool
    screened several times the recipe's size (`PublicPool.screens`) lends each round a fresh subset of one
    screen's worth of regions: the release reuses each of its few regions many times, and
    rounds that all drew on the same regions would let a similarity model learn those
    particular patches (and so discount them) rather than what a shared private image looks
    like; on a release's unseen patches it then scores worse. Otherwise
    they are unique stand-ins: half colour 1/f noise, half augmented aux images (outside the
    round's private subset when over 100 remain; small aux sets lend all their images, heavily
    augmented). Re-using a few aux images as patches would teach a similarity model to call
    encryptions sharing a public patch different although they look alike.
    """

    def __init__(self, view: PublicView, aux: ImageSet, *, n_images: int, T: int, pool=None, seed: int = 0):
        slots = view.n_private_slots
        if len(aux) < slots + 1:
            raise HidebenchError(
                f"auxiliary data has {len(aux)} images; encrypting it for {view.k}-image {view.mode}-dataset "
                f"mixing needs at least {slots + 1}")
        n_cls = view.labels.shape[1]
        if len(aux) and aux.labels.max() >= n_cls:
            raise HidebenchError(f"auxiliary labels reach {aux.labels.max()} but the release has {n_cls} classes")
        self.view, self.aux, self.pool = view, aux, pool
        screens = getattr(pool, "screens", 1)          # any object with patches(rng, n) serves as a pool
        self.regions_per_round = None if screens <= 1 else -(-len(pool.regions) // screens)
        self.n_images = int(max(slots, min(n_images, len(aux))))
        self.cfg = EncryptionConfig(k=view.k, mode=view.mode, scheme=view.scheme, T=max(1, int(T)),
                                    c1=view.c1, c2=view.c2, augment=view.augment)
        self.rng = np.random.default_rng(seed)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One freshly encrypted round: (encryptions N x 32 x 32 x 3, ids N x n_private_slots:
        the round's images, in 0..n_images-1, that each encryption holds)."""
        order = self.rng.permutation(len(self.aux))
        view, key = self.encrypt_subset(order[: self.n_images], order)
        return view.encryptions, key.private_of()

    def encrypt_subset(self, idx: np.ndarray, order: np.ndarray | None = None):
        """Encrypt the aux images `idx` (each mirrored with probability 1/2), T times each, with
        the release's scheme: (PublicView, SecretKey) of this small release of the attacker's own.
        `order`: a permutation of the aux set whose images outside `idx` may lend stand-in
        patches (drawn here when None)."""
        rng, aux = self.rng, self.aux
        order = rng.permutation(len(aux)) if order is None else order
        imgs = aux.images[idx].copy()
        flip = rng.random(len(imgs)) < 0.5           # augmentation: mirrored images
        imgs[flip] = imgs[flip, :, ::-1]
        public = None
        n_pub_slots = self.cfg.k - self.cfg.n_private_slots
        if n_pub_slots:
            m = min(len(imgs) * self.cfg.T * n_pub_slots, MAX_PUBLIC_PATCHES)
            if self.pool is not None:
                pool = self.pool if self.regions_per_round is None else self.pool.subset(rng, self.regions_per_round)
                public, _ = pool.patches(rng, m)
            else:
                rest = order[~np.isin(order, idx)]
                public = np.concatenate([pink_noise(rng, m // 2),
                                         augmented(rng, aux.images[rest if len(rest) > 100 else order], m - m // 2)])
        return encrypt(imgs, aux.labels[idx], self.view.labels.shape[1], self.cfg,
                       seed=int(rng.integers(2 ** 63)), public_patches=public)
