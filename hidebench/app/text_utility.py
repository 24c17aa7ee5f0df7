"""`hidebench utility` for a TextHide recipe: the accuracy a TextHide setting (k, m, mode) costs,
in the same run records as the image utility (family 'utility'), so the privacy/utility
frontier of a text sweep reads them as it reads the images'.

The recipe supplies the scheme and the encoder; the data owner trains a head on TextHide mixtures
of the training split's representations (hidebench.defenses.texthide_utility) and is tested on
the test split. Defaults for the recipe's Rotten Tomatoes corpus: train on its odd-indexed half,
test on its even-indexed half (the corpus is one split only; TextHide's paper uses SST-2's own).
One run writes OUT/record.json: test_accuracy_encrypted (masked test sentences, as TextHide
deploys; None for vanilla) and test_accuracy_clean (unmasked), the settings and the loss curve.
"""
from __future__ import annotations

import time
from pathlib import Path

from hidebench.challenge_io import check_out_dir, library_versions
from hidebench.context import ExecutionContext, peak_rss_mb
from hidebench.defenses.texthide_utility import TextUtilityConfig, train_text_classifier
from hidebench.record import RunRecord
from hidebench.text.recipe import TextRecipe
from hidebench.types import HidebenchError

_SPLITS = {"text:rotten_tomatoes": ("text:rotten_tomatoes[1::2]", "text:rotten_tomatoes[0::2]"),
           "text:imdb": ("text:imdb[1::2]", "text:imdb[0::2]")}


def default_text_splits(private_source: str) -> tuple[str, str]:
    base = private_source.split("[")[0]
    if base not in _SPLITS:
        raise HidebenchError(f"no default train/test split for text source {private_source!r}; give "
                             "--set train=SPEC --set test=SPEC (e.g. textfolder:PATH)")
    return _SPLITS[base]


def text_utility_setting(recipe: TextRecipe, cfg: TextUtilityConfig, vanilla: bool) -> dict:
    s = recipe.scheme
    train, test = cfg.train, cfg.test
    if not (train and test):
        d_train, d_test = default_text_splits(recipe.private.source)
        train, test = train or d_train, test or d_test
    defense = ({"scheme": "none", "mode": None, "k": None, "m": None, "c1": None, "public": None} if vanilla else
               {"scheme": s.scheme, "mode": s.mode, "k": s.k, "m": s.m, "c1": s.c1,
                "public": recipe.public.source if s.k > s.n_private_slots else None})
    return {**defense, "train": train, "test": test, "encoder": recipe.encoder.to_dict()}


def run_text_utility(recipe: TextRecipe, out_dir, cfg: TextUtilityConfig, *, vanilla: bool = False,
                     ctx: ExecutionContext | None = None) -> RunRecord:
    """Train and test one setting (module docstring); write OUT/record.json."""
    from hidebench.text.corpus import load_text_source
    from hidebench.text.encoder import encode, encoder_info

    ctx = ctx or ExecutionContext.from_env()
    out = check_out_dir(out_dir)
    ctx.check_device()
    setting = text_utility_setting(recipe, cfg, vanilla)
    t0 = time.perf_counter()
    train = load_text_source(setting["train"])
    test = load_text_source(setting["test"])
    if train.classes != test.classes:
        raise HidebenchError(f"train ({train.classes}) and test ({test.classes}) sources name different classes")
    threads = ctx.threads or 1
    enc = recipe.encoder
    train_x = encode(train.texts, enc, threads=threads, progress=ctx.progress)
    test_x = encode(test.texts, enc, threads=threads, progress=ctx.progress)
    public_x = None
    if setting["public"]:
        public_x = encode(load_text_source(setting["public"]).texts, enc, threads=threads, progress=ctx.progress)
    load_s = time.perf_counter() - t0
    with ctx.torch_threads():
        res = train_text_classifier(train_x, train.labels, test_x, test.labels, len(train.classes),
                                    None if vanilla else recipe.scheme, cfg, seed=ctx.seed, public_x=public_x,
                                    device=ctx.torch_device(), progress=ctx.progress)
    import torch

    out.mkdir(parents=True, exist_ok=True)
    rec = RunRecord(
        attack="utility", family="utility", config={**cfg.to_dict(), "vanilla": vanilla}, threat_model={}, oracles=[],
        seed=ctx.seed,
        setting={"scheme": setting["scheme"], "mode": setting["mode"], "k": setting["k"], "m": setting["m"],
                 "T": cfg.epochs, "c1": setting["c1"], "model": f"head-{cfg.layers}", "train": setting["train"],
                 "test": setting["test"], "n_train": len(train), "n_test": len(test),
                 "encoder": encoder_info(enc)["id"]},
        metrics={"test_accuracy_clean": res.test_accuracy_clean, "test_accuracy_encrypted": res.test_accuracy_encrypted},
        timings={"load_s": load_s, **res.timings, "total_s": time.perf_counter() - t0},
        peak_memory_mb=peak_rss_mb(),
        stats={"curves": res.curves, "chance": 1 / len(train.classes), "batch_size": cfg.batch_size},
        source={"recipe": recipe.to_dict(with_seed=False), "public": setting["public"]},
        context={**ctx.to_dict(), "device": str(ctx.torch_device())},
        versions={**library_versions(), "torch": torch.__version__})
    rec.write(Path(out) / "record.json")
    return rec


def text_summary_line(rec: RunRecord) -> str:
    m, s = rec.metrics, rec.setting
    what = "vanilla" if s["scheme"] == "none" else f"TextHide {s['mode']} k={s['k']} m={s['m']}"
    enc = m["test_accuracy_encrypted"]
    return (f"{what}, {s['model']} head on {s['encoder']}, {s['T']} epochs on {s['train']} ({s['n_train']} sentences): "
            + (f"test accuracy {enc:.4f} (masked, K={rec.config['K']}), unmasked {m['test_accuracy_clean']:.4f}"
               if enc is not None else f"test accuracy {m['test_accuracy_clean']:.4f}")
            + f"; {rec.timings['total_s']:.0f} s")
