"""Gradient-matching attacks on federated updates: 'dlg' and 'inverting_gradients'."""
from attacks.gradient import dlg, inverting  # noqa: F401  (registers both)
from attacks.gradient.common import GradientAttackResult, GradientMatcher, GradientThreatModel, recover_labels

__all__ = ["GradientAttackResult", "GradientMatcher", "GradientThreatModel", "recover_labels", "dlg", "inverting"]
