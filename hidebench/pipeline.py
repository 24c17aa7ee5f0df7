"""A small runner for attacks written as declared stages, each cached on disk (the grouping's
stages, carlini's, fdn's).

A `Stage` names a function `run(inputs, **upstream_outputs) -> output`, the output's dataclass,
the upstream stages it consumes and a `key(inputs)` dict: the config and inputs it reads.
`run_pipeline` runs the stages in order through the StageCache: a stage's cache key hashes its
key dict together with the content digests of its upstream stages' outputs, so a stage named
in `ctx.recompute` (`--stages`) is recomputed, and the stages downstream of it are recomputed
exactly when its output changed. Outputs go through the cache as arrays (`to_arrays` /
`from_arrays`), so a cache hit and a fresh computation hand the next stage identical values.

Output dataclass fields are stored by their metadata: arrays as they are (None: absent),
`ARRAYS` dicts of arrays under 'field.key', `JSON` values (stats, timings, scalars) as JSON.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hidebench.challenge_io import json_default
from hidebench.context import peak_rss_mb

ARRAYS = {"store": "arrays"}
JSON = {"store": "json"}


def stage_seed(seed: int, stage: str) -> int:
    """The seed of one stage (or random stream) of a run with seed `seed`: each stage draws from
    its own stream (numpy SeedSequence of the run's seed and the stage's name), so the run's seed
    reaches every stage and no two stages share a random stream."""
    return int(np.random.SeedSequence([seed, zlib.crc32(stage.encode())]).generate_state(1)[0])


def arrays_field(**kw):
    """A dataclass field holding a dict of arrays (stored under 'field.key')."""
    return field(default_factory=dict, metadata=ARRAYS, **kw)


def json_field(default=dataclasses.MISSING, **kw):
    """A dataclass field holding JSON-able values (stats, timings, scalars)."""
    if default is dataclasses.MISSING and "default_factory" not in kw:
        kw["default_factory"] = dict
    elif default is not dataclasses.MISSING:
        kw["default"] = default
    return field(metadata=JSON, **kw)


def to_arrays(obj) -> dict[str, np.ndarray]:
    """A stage output dataclass as a flat dict of arrays (see module docstring)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        store = f.metadata.get("store", "array")
        if store == "json":
            out[f.name] = np.asarray(json.dumps(v, default=json_default))
        elif store == "arrays":
            out.update({f"{f.name}.{k}": np.asarray(a) for k, a in v.items()})
        elif v is not None:
            out[f.name] = np.asarray(v)
    return out


def from_arrays(cls, arrays: dict[str, np.ndarray]):
    """The inverse of `to_arrays` (ValueError for a JSON field that is not JSON of its default's
    kind, e.g. a dict for stats)."""
    kw = {}
    for f in dataclasses.fields(cls):
        store = f.metadata.get("store", "array")
        if store == "json":
            if f.name in arrays:       # absent from entries written before the field existed: its default
                kw[f.name] = json.loads(str(arrays[f.name]))
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if isinstance(default, dict) != isinstance(kw[f.name], dict):
                    raise ValueError(f"field {f.name} holds {type(kw[f.name]).__name__}, not {type(default).__name__}")
        elif store == "arrays":
            p = f"{f.name}."
            kw[f.name] = {k[len(p):]: arrays[k] for k in arrays if k.startswith(p)}
        elif f.name in arrays:
            kw[f.name] = arrays[f.name]
    return cls(**kw)


@dataclass(frozen=True)
class Stage:
    """One declared stage. run(inputs, **{u: output of u for u in upstream}) -> output (an
    instance of `output`); key(inputs) -> the JSON-able dict its cache key hashes (with the
    upstream digests); when(inputs) -> whether it runs at all; cached: False for a stage so
    cheap that storing its output costs more than recomputing it; check(output, inputs) raises
    ValueError on a cached output this release cannot use (shapes, index ranges), so that a
    malformed cache entry is recomputed instead of failing a later stage."""

    name: str
    run: Callable[..., Any]
    output: type
    key: Callable[[Any], dict]
    upstream: tuple[str, ...] = ()
    when: Callable[[Any], bool] = lambda inputs: True
    cached: bool = True
    check: Callable[[Any, Any], None] | None = None   # (output, inputs): raise on a cached output unfit to use


@dataclass
class PipelineRun:
    """Outputs by stage name (stages that did not run are absent), cache hits, per-stage wall
    time and peak memory (`STAGE_s`, `STAGE_peak_rss_mb`)."""

    outputs: dict = field(default_factory=dict)
    hits: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    digests: dict = field(default_factory=dict)


def run_pipeline(stages: list[Stage], inputs, cache, *, on_stage: Callable[[str], None] | None = None,
                 done: PipelineRun | None = None) -> PipelineRun:
    """Run `stages` in order through `cache` (a hidebench StageCache); see module docstring.
    `done`: an earlier run through the same cache whose stages are taken as they are."""
    run = done if done is not None else PipelineRun()
    for st in stages:
        if st.name in run.outputs:
            if on_stage is not None:
                on_stage(st.name)
            continue
        if not st.when(inputs):
            continue
        present = [u for u in st.upstream if u in run.outputs]
        kwargs = {u: run.outputs[u] for u in present}

        def compute(st=st, kwargs=kwargs):
            return to_arrays(st.run(inputs, **kwargs))

        t0 = time.perf_counter()
        def validate(arrays, st=st):
            out = from_arrays(st.output, arrays)
            if st.check is not None:
                st.check(out, inputs)

        if st.cached:
            arrays = cache.get_or_compute(st.name, st.key(inputs), compute,
                                          upstream=[cache.digests[u] for u in present], validate=validate)
            run.hits[st.name] = bool(cache.hits.get(st.name))
            run.digests[st.name] = cache.digests[st.name]
        else:
            arrays = {k: np.asarray(v) for k, v in compute().items()}
        run.outputs[st.name] = from_arrays(st.output, arrays)
        run.timings[f"{st.name}_s"] = time.perf_counter() - t0
        run.timings[f"{st.name}_peak_rss_mb"] = peak_rss_mb()
        if on_stage is not None:
            on_stage(st.name)
    return run


def expect(a, name: str, shape: tuple, *, kind: str = "f", low=None, high=None) -> None:
    """Raise ValueError unless `a` is an array of `shape` (None: any size) of dtype kind `kind`
    ('f' float, 'i' integer, 'b' bool) with finite values in [low, high): the checks a stage
    runs on a cached output before using it (Stage.check)."""
    a = np.asarray(a)
    kinds = {"f": "f", "i": "iu", "b": "b"}[kind]
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)) or a.dtype.kind not in kinds:
        raise ValueError(f"{name} has shape {a.shape} ({a.dtype}), expected {shape} of kind {kind}")
    if kind == "f" and a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if a.size and ((low is not None and a.min() < low) or (high is not None and a.max() >= high)):
        raise ValueError(f"{name} holds values outside [{low}, {high})")
