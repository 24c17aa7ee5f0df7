"""hidebench: a benchmark suite for privacy attacks on InstaHide and Mixup.

Installed, the layers are subpackages: hidebench.attacks and hidebench.defenses (built from the
folders attacks/ and defenses/ of the source tree, see pyproject's package-dir). In a source
checkout (the tests' subprocesses, `python -m hidebench` from the repository) those folders sit
beside this package rather than in it; a finder then maps exactly these two names to them, so
that the same imports work in both.
"""
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"

_CHECKOUT = _Path(__file__).resolve().parent.parent
_LAYERS = ("attacks", "defenses")


class _CheckoutLayers(_abc.MetaPathFinder):
    """hidebench.attacks / hidebench.defenses -> the checkout's attacks/ / defenses/."""

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, name = fullname.partition(".")
        if pkg != "hidebench" or name not in _LAYERS:
            return None
        folder = _CHECKOUT / name
        return _util.spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


if not (_Path(__file__).parent / "attacks").is_dir() and (_CHECKOUT / "attacks" / "base.py").is_file():
    _sys.meta_path.append(_CheckoutLayers())
