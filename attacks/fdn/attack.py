"""The fusion-denoising attack as one registered release attack: ``fdn``.

Luo, Xiao, Wu, Liu, Ooi, "Fusion-denoising attack on InstaHide with data augmentation" (AAAI
2022, arXiv 2105.07754): a comparative network tells which encryptions share a private image,
and a fusion-denoising network restores the private image from a group of them, learning the
effect of the data augmentation instead of inverting a pixel-wise mixing model, which
augmentation breaks (the per-pixel regression of Carlini et al. averages misaligned copies).

    similarity_model, grouping   the comparative network and the shared grouping
    fusion                       the fusion-denoising network on every group
    decryption                   per encryption, the fused image of the group it shows (the grouping's surest)

This module imports neither torch nor the stages at import time.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register
from hidebench.attacks.fdn import STAGE_NAMES
from hidebench.attacks.fdn.config import FdnConfig
from hidebench.context import ExecutionContext, peak_rss_mb
from hidebench.threat import Oracle
from hidebench.types import PublicView, SecretKey


def fusion_result(view: PublicView, run, inp, n: int, oracle: Oracle) -> ReleaseResult:
    """The ReleaseResult of a pipeline run that ended in the fusion and decryption stages (fdn,
    or carlini with recovery 'fusion'): stats, timings, and what `evaluate` reads."""
    out = run.outputs
    grouping, fusion, final = out["grouping"], out["fusion"], out["decryption"]
    sizes = np.asarray(fusion.sizes)
    stats = {"n_private": n, "oracles": list(oracle.granted), "grouping": grouping.stats, "fusion": fusion.stats,
             "group_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
             "cache_hits": run.hits}
    if "similarity_model" in out:
        stats["similarity_model"] = out["similarity_model"].summary()
    timings = {**run.timings, **inp.timings, **{f"grouping.{k}": v for k, v in grouping.timings.items()},
               "fusion.train_s": 0.0 if fusion.stats.get("cached") else fusion.stats.get("train_s", 0.0),
               "peak_rss_mb": peak_rss_mb()}
    return ReleaseResult(decryption=final.decryption, recovered=final.recovered, stats=stats, timings=timings,
                         artifacts={"grouping": grouping, "fused": fusion.images, "T": int(view.T)})


def network_rows(view: PublicView, inp, run) -> tuple[np.ndarray, np.ndarray] | None:
    """The similarity network's own scores (no Pearson blend, no query expansion) of the
    grouping's evaluation anchors against every encryption, for its pair AUC in `evaluate`;
    None when no network was trained (Pearson, oracles)."""
    import dataclasses

    from hidebench.attacks.grouping.similarity import release_embedding

    model, ps = run.outputs.get("similarity_model"), run.outputs["grouping"].pair_sample
    if model is None or "anchors" not in ps:
        return None
    z = release_embedding(view, inp.grouping.similarity, dataclasses.replace(model, blend=0.0), device=inp.device)
    anchors = np.asarray(ps["anchors"])
    rows = z[anchors] @ z.T
    rows[np.arange(len(anchors)), anchors] = -2.0
    return anchors, rows


def evaluate_fusion_result(result: ReleaseResult, key: SecretKey) -> dict:
    """The metrics of a `fusion_result` with the key (evaluation.evaluate_fusion)."""
    from hidebench.attacks.fdn.evaluation import evaluate_fusion

    a = result.artifacts
    return evaluate_fusion(a["grouping"], a["fused"], key, a["T"], network=a.get("network_rows"))


@register
class Fdn(ReleaseAttack):
    """Luo et al. 2022: comparative network -> groups -> fusion-denoising network -> decryption."""

    name = "fdn"
    Config = FdnConfig
    uses_oracles = ("pairs", "assignment")
    uses_models = True
    stages = STAGE_NAMES

    def run(self, view: PublicView, oracle: Oracle, ctx: ExecutionContext) -> ReleaseResult:
        from hidebench.attacks.fdn.stages import STAGES, FdnInputs, check_fusion_inputs
        from hidebench.attacks.grouping.membership import check_release
        from hidebench.attacks.grouping.stages import check_grouping_inputs
        from hidebench.pipeline import run_pipeline
        from hidebench.progress import bar

        oracle = oracle if oracle is not None else Oracle(None, ())
        n = check_release(view)
        part = {p: oracle.get(p, len(view)) if p in oracle else None for p in self.uses_oracles}
        inp = FdnInputs(view, self.config.grouping, self.config.fusion, ctx, n, threat=self.threat, **part)
        check_grouping_inputs(inp)
        check_fusion_inputs(inp)
        progress = bar(total=len(STAGES), desc="fdn", enabled=ctx.progress)
        try:
            run = run_pipeline(STAGES, inp, ctx.stage_cache(), on_stage=lambda name: progress.update(1))
        finally:
            progress.close()
        result = fusion_result(view, run, inp, n, oracle)
        result.artifacts["network_rows"] = network_rows(view, inp, run)
        return result

    def evaluate(self, result: ReleaseResult, key: SecretKey) -> dict:
        """The grouping's metrics (pair AUC of the comparative network, purity, assignment
        accuracy) and the fusion's SSIM per group, by group size and purity (evaluation.py)."""
        return evaluate_fusion_result(result, key)
