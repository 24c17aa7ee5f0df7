"""The learned decoders' training data: fresh encryptions of the attacker's own aux images.

The attacker knows the public scheme (k, mode, c1, c2, InstaHide or Mixup), so it can encrypt
images from the private distribution itself, with coefficients drawn by the scheme's own
rejection rule (hidebench.defenses.instahide.sample_lambdas) and public patches from its own pool draw
(or stand-ins, hidebench.attacks.attacker_data). Every batch is a fresh draw, so the truth of every training
example is known and no example repeats. Mixing runs in torch on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hidebench.attacks.attacker_data import augmented, pink_noise
from hidebench.defenses.instahide import sample_lambdas
from hidebench.scheme import EncryptionConfig
from hidebench.types import HidebenchError, ImageSet, PublicView


@dataclass
class MixBatch:
    """One batch, NCHW tensors. encryption: what the release would publish; label_row: its
    label row; mixture: the signed mixture before the mask (= encryption for Mixup); private:
    B x slots x C x H x W, heaviest coefficient first; lambdas: B x slots, descending."""

    encryption: torch.Tensor
    label_row: torch.Tensor
    mixture: torch.Tensor
    private: torch.Tensor
    lambdas: torch.Tensor


def scheme_of(view: PublicView, scheme: str | None = None) -> EncryptionConfig:
    """The release's public scheme (optionally with another scheme name, e.g. Mixup)."""
    return EncryptionConfig(k=view.k, mode=view.mode, scheme=scheme or view.scheme, T=1, c1=view.c1, c2=view.c2)


def check_aux(aux: ImageSet, view: PublicView) -> None:
    """Aux images the decoders can train on for this release: its image shape, its classes."""
    slots = view.n_private_slots
    if aux.images.shape[1:] != view.encryptions.shape[1:]:
        raise HidebenchError(f"auxiliary images have shape {aux.images.shape[1:]}, the release's encryptions "
                             f"{view.encryptions.shape[1:]}")
    if len(aux) < slots + 1:
        raise HidebenchError(f"auxiliary data has {len(aux)} images; mixing {slots} private images needs at least {slots + 1}")
    if aux.labels.max() >= view.labels.shape[1]:
        raise HidebenchError(f"auxiliary labels reach {aux.labels.max()} but the release has {view.labels.shape[1]} classes")


def patch_bank(aux: ImageSet, pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """n public patches: from the attacker's own pool draw when granted, else half colour 1/f
    noise and half augmented aux images."""
    if pool is not None:
        patches, _ = pool.patches(rng, n)
        return patches
    return np.concatenate([pink_noise(rng, n // 2), augmented(rng, aux.images, n - n // 2)])


class MixSampler:
    """draw(B) -> MixBatch of B fresh encryptions of aux images with `scheme`."""

    def __init__(self, aux: ImageSet, n_classes: int, scheme: EncryptionConfig, patches: np.ndarray | None,
                 *, seed: int, device):
        self.scheme = scheme
        self.slots = scheme.n_private_slots
        self.n_public = scheme.k - self.slots
        if self.n_public and (patches is None or not len(patches)):
            raise HidebenchError("cross-dataset mixing needs public patches")
        self.device = device
        self.images = torch.as_tensor(aux.images, device=device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(aux.labels, device=device)
        self.patches = (torch.as_tensor(patches, device=device).permute(0, 3, 1, 2).contiguous()
                        if self.n_public else None)
        self.n_classes = n_classes
        self.rng = np.random.default_rng(seed)

    def _private_indices(self, B: int) -> np.ndarray:
        """B x slots indices into the aux images, distinct within each row."""
        N = len(self.images)
        idx = self.rng.integers(0, N, size=(B, self.slots))
        while True:
            s = np.sort(idx, 1)
            bad = np.nonzero((s[:, 1:] == s[:, :-1]).any(1))[0]
            if not len(bad):
                return idx
            idx[bad] = self.rng.integers(0, N, size=(len(bad), self.slots))

    def _flipped(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.as_tensor(self.rng.random(x.shape[:2]) < 0.5, device=self.device)
        return torch.where(flip[:, :, None, None, None], x.flip(-1), x)

    def draw(self, B: int) -> MixBatch:
        rng = self.rng
        idx = self._private_indices(B)
        lam = torch.as_tensor(sample_lambdas(rng, B, self.scheme), dtype=torch.float32, device=self.device)
        tidx = torch.as_tensor(idx, device=self.device)
        private = self._flipped(self.images[tidx])                         # B x slots x C x H x W
        parts = private
        if self.n_public:
            pub = torch.as_tensor(rng.integers(0, len(self.patches), size=(B, self.n_public)), device=self.device)
            parts = torch.cat([private, self._flipped(self.patches[pub])], 1)
        mixture = (lam[:, :, None, None, None] * parts).sum(1)
        encryption = mixture
        if self.scheme.scheme == "instahide":
            sign = torch.as_tensor(rng.integers(0, 2, size=mixture.shape, dtype=np.int8), device=self.device)
            encryption = mixture * (2 * sign.to(mixture.dtype) - 1)
        label_row = torch.zeros(B, self.n_classes, device=self.device)
        label_row.scatter_add_(1, self.labels[tidx], lam[:, : self.slots])
        order = torch.argsort(lam[:, : self.slots], dim=1, descending=True)
        private = torch.gather(private, 1, order[:, :, None, None, None].expand_as(private))
        return MixBatch(encryption, label_row, mixture, private, torch.gather(lam[:, : self.slots], 1, order))
