"""Attacks on InstaHide, Mixup and TextHide, registered by name (hidebench.attacks.base.ATTACKS).

Importing this package registers the built-in attacks; their modules import no torch until an
attack runs, so listing them stays fast."""

from hidebench.attacks import aux_mean, gradient, identity  # noqa: F401  (register aux_mean, identity, dlg, inverting_gradients)
from hidebench.attacks.base import ATTACKS, ReleaseAttack, UpdateAttack, get_attack, register
from hidebench.attacks.carlini import attack as _carlini  # noqa: F401  (registers carlini)
from hidebench.attacks.decoders import deep_decompose as _decoders  # noqa: F401  (registers deep_decompose, gan_demask)
from hidebench.attacks.fdn import attack as _fdn  # noqa: F401  (registers fdn)
from hidebench.attacks.texthide import attack as _texthide  # noqa: F401  (registers texthide_masks, _unmix, _invert)

__all__ = ["ATTACKS", "ReleaseAttack", "UpdateAttack", "get_attack", "register"]
