"""The Carlini et al. attack on InstaHide as one registered release attack: ``carlini``.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramer, "An Attack on
InstaHide: Is Private Learning Possible with Instance Encoding?" (arXiv 2011.05315).

    similarity_model, grouping   which private images each encryption mixes (stages 1-3)
    regression                   the private images up to one sign per position (stage 4)
    signs                        that sign, from smoothness and aux statistics (stage 5)
    decryption                   per encryption, the recovered image of the group it is surest of

The stages are declared in stages.py and run by pipeline.py, each cached (ctx.stage_cache())
under its config, the release and its upstream outputs, so a rerun resumes from the first stage
whose inputs changed and ctx.recompute names stages to recompute. Oracle parts ('pairs',
'assignment', 'lambdas') replace a stage's input by the key's truth, come only through
`oracle.get`, and are part of the cache keys. This module imports neither torch nor the stages
at import time: listing attacks stays cheap.
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np

from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register
from hidebench.attacks.carlini import STAGE_NAMES
from hidebench.attacks.carlini.config import CarliniConfig
from hidebench.context import ExecutionContext, peak_rss_mb
from hidebench.threat import Oracle
from hidebench.types import HidebenchError, PublicView, SecretKey


@register
class Carlini(ReleaseAttack):
    """Carlini et al. 2020: similarity -> clusters -> assignment -> regression -> signs -> decryption."""

    name = "carlini"
    Config = CarliniConfig
    uses_oracles = ("pairs", "assignment", "lambdas")
    uses_models = True
    stages = STAGE_NAMES

    def run(self, view: PublicView, oracle: Oracle, ctx: ExecutionContext) -> ReleaseResult:
        from hidebench.attacks.carlini.stages import AttackInputs, check_inputs, stages_for
        from hidebench.attacks.grouping.membership import check_release
        from hidebench.pipeline import PipelineRun, run_pipeline
        from hidebench.progress import bar

        oracle = oracle if oracle is not None else Oracle(None, ())
        n = check_release(view) if view.T else None     # a release that does not fit: refused before the oracle is read
        part = {p: oracle.get(p, len(view)) if p in oracle else None for p in self.uses_oracles}
        cache = ctx.stage_cache()
        first, estimate = PipelineRun(), None
        if n is None:
            view, estimate, first = self._estimate_T(view, part, ctx, cache)
            n = check_release(view)
        inp = AttackInputs(view, self.config, ctx, n, threat=self.threat, **part)
        check_inputs(inp)
        stages = stages_for(self.config)
        progress = bar(total=len(stages), desc="carlini", enabled=ctx.progress)
        try:
            run = run_pipeline(stages, inp, cache, on_stage=lambda name: progress.update(1), done=first)
        finally:
            progress.close()
        if self.config.recovery == "fusion":
            from hidebench.attacks.fdn.attack import fusion_result

            result = fusion_result(view, run, inp, n, oracle)
            if estimate is not None:
                result.stats["T_estimate"] = estimate.stats()
            return result
        out = run.outputs
        grouping, regression, final = out["grouping"], out["regression"], out["decryption"]

        stats = {"n_private": n, "oracles": list(oracle.granted), "colour": "grey" if inp.grey else "rgb",
                 "grouping": grouping.stats, "regression": regression.stats,
                 "split_encryptions": int(np.asarray(regression.split).sum()), "cache_hits": run.hits}
        if estimate is not None:
            stats["T_estimate"] = estimate.stats()
        if "similarity_model" in out:
            stats["similarity_model"] = out["similarity_model"].summary()
        if "signs" in out:
            stats["signs"] = out["signs"].stats
        if "decoder_prior" in out:
            stats["decoder_prior"] = out["decoder_prior"].stats
        timings = {**run.timings, **inp.timings, **{f"grouping.{k}": v for k, v in grouping.timings.items()},
                   **{f"regression.{k}": v for k, v in regression.timings.items()}, "peak_rss_mb": peak_rss_mb()}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            timings["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20

        regressed = regression.images
        if regressed.shape[-1] != view.encryptions.shape[-1]:
            regressed = np.repeat(regressed, view.encryptions.shape[-1], axis=-1)
        artifacts = {"grouping": grouping, "regression": regression, "regressed": regressed,
                     "oracle_assignment": inp.assignment is not None,
                     "sign_prior": (self.config.signs, _full_prior(inp)) if view.scheme == "instahide" else None}
        return ReleaseResult(decryption=final.decryption, recovered=final.recovered, stats=stats, timings=timings,
                             artifacts=artifacts)

    def _estimate_T(self, view: PublicView, part: dict, ctx: ExecutionContext, cache):
        """T for a release that states none (count.py): (the view with T, the estimate, the
        pipeline run that trained the similarity model for it). Ambiguous: one error line."""
        from hidebench.attacks.carlini.stages import STAGES, AttackInputs, check_inputs
        from hidebench.attacks.grouping.count import estimate_T
        from hidebench.attacks.grouping.membership import check_release, describe_T_candidates
        from hidebench.attacks.grouping.similarity import encryption_embedder
        from hidebench.pipeline import PipelineRun, run_pipeline

        inp = AttackInputs(view, self.config, ctx, 0, threat=self.threat, **part)
        first, embed_fn, granted = PipelineRun(), None, bool(inp.aux_spec)
        if granted:
            check_inputs(inp)
            first = run_pipeline([s for s in STAGES if s.name == "similarity_model"], inp, cache)
            embed_fn = encryption_embedder(self.config.similarity, first.outputs.get("similarity_model"),
                                           device=inp.device)
        est = estimate_T(view, inp.aux() if granted else None, inp.pool() if granted else None, embed_fn,
                         seed=inp.seed("count"), progress=ctx.progress)
        if est.T is None:
            if est.source == "labels":
                check_release(view)           # the labels' error: the candidates, and --T / --n-priv
            E = len(view)
            near = sorted((r for r in est.candidates if r.get("distance") is not None), key=lambda r: r["distance"])
            unsim = [r["T"] for r in est.candidates if r.get("simulated") is None]
            raise HidebenchError(
                "the release does not state T (encryptions per private image), and neither its labels nor its "
                f"similarity fix it: nearest candidates {describe_T_candidates(E, [r['T'] for r in near], 3)} "
                f"(similarity tail share {est.statistic:.4f} against simulated "
                f"{', '.join(format(r['simulated'][0], '.4f') for r in near[:3])})"
                + (f"; the aux data cannot simulate T {unsim[:4]}" if unsim else "") + "; give --T or --n-priv")
        return dataclasses.replace(view, T=est.T), est, first

    def evaluate(self, result: ReleaseResult, key: SecretKey) -> dict:
        """Stage metrics with the key: grouping (pair AUC, precision@T, purity, recall,
        assignment accuracy, before and after the reassignment rounds), coefficient error, and
        the Hungarian-matched SSIM of the private set after each recovery step, with oracle
        references (the true sign per position); with recovery 'fusion', fdn's metrics (the
        grouping's and the fusion's SSIM per group)."""
        from hidebench.attacks.carlini.evaluation import evaluate_run

        if "grouping" not in result.artifacts:
            return {}
        if "fused" in result.artifacts:
            from hidebench.attacks.fdn.attack import evaluate_fusion_result

            return evaluate_fusion_result(result, key)
        return evaluate_run(result.artifacts, result.recovered, key)


def _full_prior(inp):
    from hidebench.attacks.carlini.stages import sign_prior

    return sign_prior(inp, inp.view.encryptions.shape[-1])
