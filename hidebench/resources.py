"""Bounds on what user-given numbers may allocate, checked before any work.

A recipe with T = 10^9, a --set batch_size of 10^8 or a huge pool screen would otherwise fail
minutes later with a MemoryError (or take the machine down); here the memory such a number
implies is estimated up front and refused with one line saying how much it would need. The
estimates are deliberately rough (within a small factor): they only catch numbers that cannot
fit, never ones that merely run slowly.
"""
from __future__ import annotations

import os

from hidebench.types import HidebenchError

# Threads and worker processes beyond these only cost memory (each holds a stack, and a worker
# a whole interpreter with torch): no machine benefits from more.
MAX_THREADS = 1024
MAX_WORKERS = 256
IMAGE_BYTES = 32 * 32 * 3 * 4          # one float32 image of the InstaHide format


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else physical
    memory), None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"


def check_memory(nbytes: float, what: str) -> None:
    """Refuse `what` when it would need more memory than the machine has available."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise HidebenchError(f"{what} would need about {fmt_bytes(nbytes)} of memory; this machine has "
                             f"{fmt_bytes(avail)} available: use smaller numbers")
