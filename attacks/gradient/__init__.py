"""Gradient-matching attacks on federated updates, registered as UpdateAttacks: 'dlg' (Zhu et
al. 2019) and 'inverting_gradients' (Geiping et al. 2020). Importing this package imports no
torch; the torch machinery (hidebench.attacks.gradient.matching) loads when an attack runs."""
from hidebench.attacks.gradient import dlg, inverting  # noqa: F401  (registers both)
from hidebench.attacks.gradient.base import GradientAttack
from hidebench.attacks.gradient.dlg import DLG, DLGConfig
from hidebench.attacks.gradient.inverting import InvertingConfig, InvertingGradients

__all__ = ["DLG", "DLGConfig", "GradientAttack", "InvertingConfig", "InvertingGradients", "dlg", "inverting"]
