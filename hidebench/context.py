"""The execution context: where and how a run executes, kept apart from what it computes.

A config says what an attack computes; the context says on which device, with how many
threads, from which data root, into which cache, with or without progress bars, and from which
seed. Nothing in a config's defaults depends on the hardware, so a config and seed give the same
result on every machine of the same device type. Workers receive the context explicitly (it is
a small serialisable dataclass), never through the driver's environment.
"""
from __future__ import annotations

import os
import resource
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hidebench.resources import MAX_THREADS
from hidebench.types import HidebenchError

DATA_ENV = "HIDEBENCH_DATA"


@dataclass(frozen=True)
class ExecutionContext:
    """device: 'auto' (CUDA when torch sees one, else CPU), 'cpu', 'cuda' or 'cuda:N'.
    threads: torch CPU threads during the run (0: leave torch's setting).
    data_root: where data sources live (None: $HIDEBENCH_DATA, read once by `from_env`).
    cache_dir: stage cache folder (None: no caching). progress: progress bars on a terminal.
    seed: the attack's seed; every stage derives its randomness from it.
    recompute: cached stages to recompute even when their key matches (what `--stages` names);
    the stages downstream of them follow, because their keys hold the upstream outputs.
    model_dir: cache of trained attack models (hidebench.model_cache; None: train every time;
    `from_env` fills in $HIDEBENCH_MODELS or the user's cache folder)."""

    device: str = "auto"
    threads: int = 0
    data_root: str | None = None
    cache_dir: str | None = None
    progress: bool = True
    seed: int = 0
    recompute: tuple[str, ...] = ()
    model_dir: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "recompute", tuple(self.recompute))
        if self.device not in ("auto", "cpu", "cuda") and not (str(self.device).startswith("cuda:")
                                                              and str(self.device)[5:].isdigit()):
            raise HidebenchError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 0 <= self.threads <= MAX_THREADS:
            raise HidebenchError(f"threads must be an integer in [0, {MAX_THREADS}], got {self.threads!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise HidebenchError(f"seed must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_env(cls, **kw) -> ExecutionContext:
        """A context whose data root defaults to $HIDEBENCH_DATA (read here, once)."""
        if kw.get("data_root") is None and os.environ.get(DATA_ENV):
            kw["data_root"] = os.environ[DATA_ENV]
        if kw.get("model_dir") is None:
            from hidebench.model_cache import default_model_dir

            kw["model_dir"] = default_model_dir()
        return cls(**{k: str(v) if isinstance(v, Path) else v for k, v in kw.items()})

    def replace(self, **changes) -> ExecutionContext:
        return replace(self, **{k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    def stage_cache(self):
        from hidebench.stage_cache import StageCache

        return StageCache(self.cache_dir, recompute=self.recompute)

    def model_cache(self):
        from hidebench.model_cache import ModelCache

        return ModelCache(self.model_dir)

    def torch_device(self):
        return torch_device(self.device)

    def check_device(self) -> None:
        """Refuse a CUDA device this machine does not have, before any work (auto and cpu
        always exist, and checking them would import torch for nothing)."""
        if self.device not in ("auto", "cpu"):
            torch_device(self.device)

    @contextmanager
    def torch_threads(self):
        """Run a block with `threads` torch threads (no change when 0), with freed memory kept
        for reuse from then on (hidebench.allocator: page faults took half the CPU time)."""
        import torch

        from hidebench.allocator import retain_freed_memory

        retain_freed_memory()

        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)


def torch_device(name: str = "auto"):
    """The torch device for 'auto', 'cpu', 'cuda' or 'cuda:N' (a clear error without CUDA)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise HidebenchError(f"device {name!r} requested but torch sees no CUDA device")
    if str(name).startswith("cuda:") and int(str(name)[5:]) >= torch.cuda.device_count():
        raise HidebenchError(f"device {name!r} requested but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if name != "cpu" and not str(name).startswith("cuda"):
        raise HidebenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def machine_description() -> str:
    """The machine a run ran on, for its record: CPU model and cores (and the GPU, when torch
    is loaded and sees one)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out += f", {torch.cuda.get_device_name(0)}"
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / 2 ** 20 if sys.platform == "darwin" else r / 1024, 1)
