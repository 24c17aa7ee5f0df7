"""hidebench.allocator: a run reuses the memory it frees instead of faulting it in afresh (the
kernel's page faults took half of a Carlini run's CPU time before)."""
import platform
import resource

import pytest
import torch

from hidebench.allocator import retain_freed_memory
from hidebench.context import ExecutionContext

NUMEL = 16_000_000          # 64 MB of float32: well above glibc's largest mmap threshold


def _page_faults_of_fresh_tensors(n: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t = torch.ones(NUMEL)   # every page written
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_run_reuses_freed_memory_instead_of_faulting_it_in():
    with ExecutionContext(threads=1).torch_threads():
        assert retain_freed_memory()
        # the heap grows to its working size over the first rounds, then serves every tensor;
        # unmapped on every free, each round would fault in about 6 x pages
        faults = [_page_faults_of_fresh_tensors(6) for _ in range(4)]
        assert faults[-1] < NUMEL * 4 // resource.getpagesize() / 2, faults
