"""Keep freed memory in the process for the next array of the same size.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB)
with a fresh mmap and unmaps it on free, so the next array of that size faults in zeroed pages
one 4 KiB page at a time. The attacks allocate arrays of E x 3072 floats in every step of their
loops, and the kernel's page faults took about half of a Carlini run's CPU time (measurements:
docs/history.md, "Freed memory kept for reuse").

`retain_freed_memory` sets M_MMAP_MAX to 0 (large blocks come from the heap) and
M_TRIM_THRESHOLD to -1 (the heap never shrinks), as mallopt(3) documents. The results are the
same; the cost is peak resident memory, since freed blocks stay mapped. It acts process-wide,
once, and only under glibc; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (once per process); True when the
    setting holds."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):
        return False
