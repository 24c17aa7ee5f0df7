"""The encryption scheme's parameters (InstaHide or Mixup), shared by recipes, defenses and
attacks: what a release states about how it was made."""
from __future__ import annotations

from dataclasses import dataclass

from hidebench.config import Config, check_bool, check_choice, check_float, check_int
from hidebench.types import MODES, SCHEMES, HidebenchError, private_slots


@dataclass
class EncryptionConfig(Config):
    """Scheme parameters (Huang et al. 2020). T encryptions are made for each private image (it
    is slot 0); coefficients are at most c1, and cross-dataset the two private ones sum to at
    least c2. augment: every private image is augmented afresh in every encryption it enters
    (random crop with 4-pixel padding, horizontal flip), as the authors' training code does before
    each epoch's encryption; `to_dict` leaves the key out when it is off, so releases made before
    it existed keep their manifests, digests and cache keys."""

    section = "scheme"
    k: int = 6
    mode: str = "cross"
    scheme: str = "instahide"
    T: int = 50
    c1: float = 0.65
    c2: float = 0.3
    augment: bool = False

    def to_dict(self) -> dict:
        d = super().to_dict()
        if not self.augment:
            d.pop("augment")
        return d

    def validate(self):
        check_choice(self.scheme, "scheme.scheme", SCHEMES)
        check_choice(self.mode, "scheme.mode", MODES)
        check_bool(self.augment, "scheme.augment")
        self.k = check_int(self.k, "scheme.k", min=2)
        if self.mode == "cross" and self.k < 3:
            raise HidebenchError(f"cross-dataset mixing needs k >= 3 (2 private images + at least 1 public patch), "
                                 f"got k={self.k!r}")
        self.T = check_int(self.T, "scheme.T", min=1)
        check_float(self.c1, "scheme.c1", min=0, max=1, min_open=True)
        if self.c1 * self.k <= 1:
            raise HidebenchError(f"infeasible: with k={self.k} coefficients summing to 1, at least one is "
                                 f">= 1/k = {1 / self.k:.3f} > c1={self.c1!r}")
        if self.mode == "cross":
            check_float(self.c2, "scheme.c2", min=0, max=1)
            if self.c2 > 2 * self.c1:
                raise HidebenchError(f"infeasible: two private coefficients <= c1={self.c1!r} cannot sum to c2={self.c2!r}")

    @property
    def n_private_slots(self) -> int:
        return private_slots(self.mode, self.k)
