"""The Carlini et al. attack on InstaHide as one registered release attack: ``carlini``.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramer, "An Attack on
InstaHide: Is Private Learning Possible with Instance Encoding?" (arXiv 2011.05315).

    similarity_model, grouping   which private images each encryption mixes (stages 1-3)
    regression                   the private images up to one sign per position (stage 4)
    signs                        that sign, from smoothness and aux statistics (stage 5)
    decryption                   per encryption, the recovered image of its heavier private slot

The stages are declared in stages.py and run by pipeline.py, each cached (ctx.stage_cache())
under its config, the release and its upstream outputs, so a rerun resumes from the first stage
whose inputs changed and ctx.recompute names stages to recompute. Oracle parts ('pairs',
'assignment', 'lambdas') replace a stage's input by the key's truth, come only through
`oracle.get`, and are part of the cache keys. This module imports neither torch nor the stages
at import time: listing attacks stays cheap.
"""
from __future__ import annotations

import sys
from typing import ClassVar

import numpy as np

from attacks.base import ReleaseAttack, ReleaseResult, register
from attacks.carlini import STAGE_NAMES
from attacks.carlini.config import CarliniConfig
from hidebench.context import ExecutionContext, peak_rss_mb
from hidebench.threat import Oracle
from hidebench.types import PublicView, SecretKey


@register
class Carlini(ReleaseAttack):
    """Carlini et al. 2020: similarity -> clusters -> assignment -> regression -> signs -> decryption."""

    name = "carlini"
    Config = CarliniConfig
    uses_oracles = ("pairs", "assignment", "lambdas")
    needs_T = True
    stages = STAGE_NAMES
    # a quick run for the registry-wide contract test: every stage but the similarity training
    tiny_config: ClassVar[dict] = {"similarity": {"method": "pearson"}, "reassignment": {"rounds": 1},
                                   "regression": {"steps": 10, "adam_steps": 10}}

    def run(self, view: PublicView, oracle: Oracle, ctx: ExecutionContext) -> ReleaseResult:
        from attacks.carlini.mixing import check_release
        from attacks.carlini.pipeline import run_pipeline
        from attacks.carlini.stages import STAGES, AttackInputs, check_inputs
        from hidebench.progress import bar

        oracle = oracle if oracle is not None else Oracle(None, ())
        n = check_release(view)
        part = {p: oracle.get(p, len(view)) if p in oracle else None for p in self.uses_oracles}
        inp = AttackInputs(view, self.config, ctx, n, threat=self.threat, **part)
        check_inputs(inp)
        progress = bar(total=len(STAGES), desc="carlini", enabled=ctx.progress)
        try:
            run = run_pipeline(STAGES, inp, ctx.stage_cache(), on_stage=lambda name: progress.update(1))
        finally:
            progress.close()
        out = run.outputs
        grouping, regression, final = out["grouping"], out["regression"], out["decryption"]

        stats = {"n_private": n, "oracles": list(oracle.granted), "colour": "grey" if inp.grey else "rgb",
                 "grouping": grouping.stats, "regression": regression.stats,
                 "split_encryptions": int(np.asarray(regression.split).sum()), "cache_hits": run.hits}
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

    def evaluate(self, result: ReleaseResult, key: SecretKey) -> dict:
        """Stage metrics with the key: grouping (pair AUC, precision@T, purity, recall,
        assignment accuracy, before and after the reassignment rounds), coefficient error, and
        the Hungarian-matched SSIM of the private set after each recovery step, with oracle
        references (the true sign per position)."""
        from attacks.carlini.evaluation import evaluate_run

        if "grouping" not in result.artifacts:
            return {}
        return evaluate_run(result.artifacts, result.recovered, key)


def _full_prior(inp):
    from attacks.carlini.stages import sign_prior

    return sign_prior(inp, inp.view.encryptions.shape[-1])
