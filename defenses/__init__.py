"""Defenses: InstaHide (inside- and cross-dataset) and Mixup encryption, challenge generation."""

from hidebench.defenses.instahide import EncryptionConfig, encrypt, sample_lambdas

__all__ = ["EncryptionConfig", "encrypt", "sample_lambdas"]
