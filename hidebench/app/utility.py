"""`hidebench utility`: what a defense setting costs in accuracy, the other half of the benchmark.

A recipe supplies the scheme (k, mode, c1, c2, InstaHide or Mixup) and the public pool; the data
owner trains a classifier on fresh encryptions of the training split every epoch and is tested
on the test split (hidebench.defenses.utility). One run writes OUT/record.json (a RunRecord of family
'utility': test_accuracy_clean, test_accuracy_encrypted, the settings and the curves) and
OUT/checkpoint.pt (rewritten every epoch; a rerun with the same settings resumes from it).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hidebench.challenge_io import check_out_dir, library_versions
from hidebench.context import ExecutionContext, machine_description, peak_rss_mb
from hidebench.recipes import Recipe
from hidebench.record import RunRecord
from hidebench.types import HidebenchError

# A recipe's private source -> its (train, test) sources when utility.train / .test are not given.
_SPLITS = {"cifar10": ("cifar10:train", "cifar10:test"), "lfw": ("lfw[0::2]", "lfw[1::2]")}


def default_splits(private_source: str) -> tuple[str, str]:
    """The train and test sources of a recipe's private source: CIFAR-10's own splits; for the
    embedded LFW subset (faces vs non-faces) its even and odd halves."""
    base = private_source.split("[")[0].split(":")[0]
    if base not in _SPLITS:
        raise HidebenchError(f"no default train/test split for private source {private_source!r}; "
                             "give --train and --test (e.g. imagefolder:PATH, npz:PATH)")
    return _SPLITS[base]


def utility_setting(recipe: Recipe, cfg, vanilla: bool) -> dict:
    """What the accuracy depends on besides the training config: the defense and the data."""
    s = recipe.scheme
    train, test = cfg.train, cfg.test
    if not (train and test):
        default_train, default_test = default_splits(recipe.private.source)
        train, test = train or default_train, test or default_test
    defense = {"scheme": "none", "mode": None, "k": None, "c1": None, "c2": None, "pool": None} if vanilla else {
        "scheme": s.scheme, "mode": s.mode, "k": s.k, "c1": s.c1, "c2": s.c2,
        "pool": recipe.pool.to_dict() if s.k > s.n_private_slots else None}
    return {**defense, "train": train, "test": test}


def load_utility_data(recipe: Recipe, setting: dict, ctx: ExecutionContext, loaded: dict | None = None):
    """(train, test, patch_bank or None) of a setting; `loaded`: a dict the caller keeps across
    runs so that each source and pool is read once (benchmarks train many settings)."""
    from hidebench.data import build_pool, load_source

    memo = {} if loaded is None else loaded

    def once(key, make):
        if key not in memo:
            memo[key] = make()
        return memo[key]

    train = once(("source", setting["train"]), lambda: load_source(setting["train"], data_root=ctx.data_root,
                                                                    progress=ctx.progress))
    test = once(("source", setting["test"]), lambda: load_source(setting["test"], data_root=ctx.data_root,
                                                                 progress=ctx.progress))
    patch_bank = None
    if setting["pool"] is not None:
        pool = once(("pool", ctx.seed, json.dumps(setting["pool"], sort_keys=True)), lambda: build_pool(
            recipe.pool, np.random.default_rng(np.random.SeedSequence([ctx.seed, 3])), data_root=ctx.data_root,
            progress=ctx.progress))
        patch_bank = lambda rng, n: pool.patches(rng, n)[0]          # noqa: E731
    return train, test, patch_bank


def run_utility(recipe: Recipe, out_dir, cfg, *, vanilla: bool = False, ctx: ExecutionContext | None = None,
                on_epoch=None, loaded: dict | None = None) -> RunRecord:
    """Train and test one setting (see the module docstring); resumes from OUT/checkpoint.pt.
    loaded: see load_utility_data."""
    from hidebench.defenses.utility.training import train_classifier

    ctx = ctx or ExecutionContext.from_env()
    out = check_out_dir(out_dir)
    ctx.check_device()
    setting = utility_setting(recipe, cfg, vanilla)
    scheme = None if vanilla else recipe.scheme
    t0 = time.perf_counter()
    train, test, patch_bank = load_utility_data(recipe, setting, ctx, loaded)
    load_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with ctx.torch_threads():
        res = train_classifier(train, test, scheme, cfg, patch_bank=patch_bank, seed=ctx.seed,
                               device=ctx.torch_device(), checkpoint_dir=out, progress=ctx.progress,
                               settings={**setting, "train_fingerprint": train.fingerprint,
                                         "test_fingerprint": test.fingerprint},
                               on_epoch=on_epoch)
    import torch

    cfg = res.config                       # every "auto" resolved: what was trained
    rec = RunRecord(
        attack="utility", family="utility", config={**cfg.to_dict(), "vanilla": vanilla}, threat_model={}, oracles=[],
        seed=ctx.seed,
        setting={"scheme": setting["scheme"], "mode": setting["mode"], "k": setting["k"], "T": None,
                 "epochs": cfg.epochs, "c1": setting["c1"], "c2": setting["c2"], "model": cfg.model,
                 "train": setting["train"], "test": setting["test"], "n_train": len(train), "n_test": len(test)},
        metrics={"test_accuracy_clean": res.test_accuracy_clean, "test_accuracy_encrypted": res.test_accuracy_encrypted},
        timings={"load_s": load_s, **res.timings, "total_s": time.perf_counter() - t0},
        peak_memory_mb=peak_rss_mb(),
        stats={"curves": res.curves, "resumed_from_epoch": res.resumed_from_epoch, "chance": 1 / len(train.classes),
               "batch_size": res.batch_size, "steps": cfg.epochs * (len(train) // res.batch_size)},
        source={"recipe": recipe.to_dict(with_seed=False), "pool": setting["pool"]},
        context={**ctx.to_dict(), "device": str(ctx.torch_device()), "machine": machine_description()},
        versions={**library_versions(), "torch": torch.__version__})
    rec.write(Path(out) / "record.json")
    return rec


def summary_line(rec: RunRecord) -> str:
    m, s = rec.metrics, rec.setting
    what = "vanilla" if s["scheme"] == "none" else f"{s['scheme']} {s['mode']} k={s['k']}"
    enc = m["test_accuracy_encrypted"]
    return (f"{what}, {s['model']}, {s['epochs']} epochs on {s['train']} ({s['n_train']} images): test accuracy clean "
            f"{m['test_accuracy_clean']:.4f}" + (f", encrypted (K={rec.config['K']}) {enc:.4f}" if enc is not None else "")
            + f"; {rec.timings['total_s']:.0f} s")
