"""The deep-decompose attack: one encryption -> the private images it mixes.

Huang, Song, Li, Arora, "InstaHide: Instance-hiding Schemes for Private Distributed Learning"
(ICML 2020, Sec. 5) evaluate a "deep decompose" attack on k=6 InstaHide without publishing it;
hidebench's version: a U-Net conditioned on the encryption's label row, trained on the
attacker's own encryptions of its aux images (attacks/decoders/mixes.py), from |e| (InstaHide)
or e (Mixup) to the n_out heaviest private images. It needs no T and no grouping: it attacks
each encryption alone; when T is known, the per-encryption predictions are fused per group
(fusion.py).
"""
from __future__ import annotations

import time

import numpy as np

from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register
from hidebench.attacks.decoders.config import DeepDecomposeConfig


def model_stats(trained, infer_s: float, n: int) -> dict:
    return {"curves": trained.curves, "train_s": round(trained.train_s, 3), "cached": trained.cached,
            "model": trained.entry, "inference_throughput": round(n / max(infer_s, 1e-9), 1)}


def output_ssim(preds: np.ndarray, key) -> dict:
    """Per output rank o: the mean over encryptions of its best SSIM against the private images
    the encryption mixes."""
    from hidebench.metrics import ssim

    ids = key.private_of()
    return {f"output{o}_max_ssim": float(np.mean(np.max(
        [ssim(np.clip(preds[:, o], -1, 1), key.private[ids[:, j]]) for j in range(ids.shape[1])], 0)))
        for o in range(preds.shape[1])}


@register
class DeepDecompose(ReleaseAttack):
    """Deep decompose (Huang et al. 2020): a U-Net from one encryption to its private images."""

    name = "deep_decompose"
    Config = DeepDecomposeConfig
    uses_oracles = ("pairs",)
    uses_models = True

    def run(self, view, oracle, ctx):
        from hidebench.attacks.decoders.decomposition import AttackerData, decompose, decomposer, recovered_set
        from hidebench.attacks.decoders.training import decoder_input
        from hidebench.pipeline import stage_seed

        cfg, device = self.config, ctx.torch_device()
        data = AttackerData(view, self.threat, ctx, cfg.training.aux_max, self.name)
        trained = decomposer(view, view.scheme, data, cfg, ctx, device, seed=stage_seed(ctx.seed, "deep_decompose"))
        t0 = time.perf_counter()
        inputs = decoder_input(view.encryptions, view.scheme)
        preds = decompose(trained, inputs, view.labels, cfg, device, ctx.progress)
        infer_s = time.perf_counter() - t0
        decryption, recovered, fstats, ftimings = recovered_set(preds, view, cfg, oracle, self.threat, ctx)
        return ReleaseResult(decryption=decryption, recovered=recovered,
                             stats={**model_stats(trained, infer_s, len(view)), **fstats},
                             timings={"load_aux_s": data.load_s, "train_s": 0.0 if trained.cached else trained.train_s,
                                      "inference_s": infer_s, **ftimings},
                             artifacts={"predictions": preds})

    def evaluate(self, result, key):
        return output_ssim(result.artifacts["predictions"], key)
