"""Keep freed memory in the process for the next array of the same size.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB)
with a fresh mmap and unmaps it on free, so the next array of that size faults in zeroed pages
one 4 KiB page at a time. The attacks allocate arrays of E x 3072 floats (60 MB at E = 5000)
in every step of their loops, and on the 2-core machine the kernel's page faults took half of
the CPU time: the Carlini regression ran 443 s on an unseen Tiny-ImageNet release, 136 s with
freed memory kept, with the same images (benchmarks/records/carlini-tinyimagenet-fresh).

`retain_freed_memory` sets M_MMAP_MAX to 0 (large blocks come from the heap) and
M_TRIM_THRESHOLD to -1 (the heap never shrinks), as mallopt(3) documents. The cost is peak
resident memory: freed blocks stay mapped (3.6 -> 4.4 GB in that run). It acts process-wide,
once, and only under glibc; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied = False


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True when the setting holds."""
    global _applied
    if not _applied and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
        except (OSError, AttributeError):
            _applied = False
    return _applied
