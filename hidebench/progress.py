"""Progress bars that stay out of logs: shown only when asked for and stderr is a terminal.

A tqdm bar written to a file or pipe fills it with carriage returns and escape codes (nested
bars more so), so every bar in hidebench goes through `bar`.
"""
from __future__ import annotations

import sys


def bar(iterable=None, *, enabled: bool = True, **kw):
    """tqdm(iterable, **kw), disabled unless `enabled` and stderr is a TTY."""
    from tqdm import tqdm

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):   # replaced or closed stderr
        tty = False
    return tqdm(iterable, disable=not (enabled and tty), **kw)
