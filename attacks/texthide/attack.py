"""The three attacks on a TextHide release, each a prefix of one staged pipeline (stages.py):

    texthide_masks    the mask pool and every encryption's mask; decryption: the unmasked encryptions
    texthide_unmix    + the private representations; decryption: each encryption's heaviest one
    texthide_invert   + the nearest candidate sentence of each (decryption: that sentence's
                      representation), or with invert.method 'bow' the words a learned inverter finds

Xie and Hong ("Reconstruction Attack on Instance Encoding for Language Understanding", EMNLP
2021) break TextHide by recovering its private data from the encryptions; their paper's text was
not reachable when these were written, so they follow its idea (masks, then mixing, then text),
with the steps described in masks.py, unmix.py and invert.py. `evaluate` scores every stage
against the key: mask accuracy, the grouping's assignment accuracy (the image attacks' own
measure, hidebench.attacks.grouping.groups.evaluate_grouping), and the inversion's statistics.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from hidebench.attacks.base import ReleaseResult, TextReleaseAttack, register
from hidebench.attacks.texthide.config import InvertAttackConfig, MasksAttackConfig, UnmixAttackConfig
from hidebench.attacks.texthide.stages import INVERT, MASKS, REFERENCE, UNMIX, TextInputs
from hidebench.attacks.texthide.unmix import heavy_rows
from hidebench.context import ExecutionContext
from hidebench.pipeline import run_pipeline
from hidebench.text.threat import TextOracle
from hidebench.text.types import TextKey, TextView
from hidebench.types import HidebenchError


class _TextHideAttack(TextReleaseAttack):
    """Common run: the attack's stages through the stage cache, and the stage metrics."""

    STAGES: ClassVar[tuple] = ()

    @classmethod
    def stage_names(cls) -> tuple[str, ...]:
        return tuple(s.name for s in cls.STAGES)

    def _pipeline(self, view: TextView, oracle: TextOracle, ctx: ExecutionContext):
        inp = TextInputs(view, self.config, ctx, self.threat,
                         masks=oracle.get("masks") if "masks" in oracle else None,
                         assignment=oracle.get("assignment") if "assignment" in oracle else None, attack=self.name)
        if inp.assignment is not None and inp.assignment.ids.shape != (len(view), view.n_private_slots):
            raise HidebenchError("the assignment oracle does not fit the release")
        run = run_pipeline(list(self.STAGES), inp, ctx.stage_cache())
        timings = {k: v for k, v in run.timings.items() if k.endswith("_s")}
        stats = {"cache_hits": run.hits}
        for name, out in run.outputs.items():
            if getattr(out, "stats", None):
                stats[name.removeprefix("texthide_")] = out.stats
            for k, v in (getattr(out, "timings", None) or {}).items():
                timings[f"{name.removeprefix('texthide_')}.{k}"] = v
        return inp, run.outputs, stats, timings

    def evaluate(self, result: ReleaseResult, key: TextKey) -> dict:
        from hidebench.text.metrics import mask_accuracy

        a = result.artifacts
        out = {"masks": mask_accuracy(a["mask_pool"], a["mask_index"], key)}
        if "refined_mask_pool" in a:
            out["refined_masks"] = mask_accuracy(a["refined_mask_pool"], a["mask_index"], key)
        if "assignment" in a:
            from hidebench.attacks.grouping.groups import Grouping, evaluate_grouping

            g = Grouping(assignment=a["assignment"], cluster_class=a["cluster_class"], n_clusters=len(key.private))
            ev = evaluate_grouping(g, key)
            out["grouping"] = {k: v for k, v in ev.items() if k != "cluster_to_private"}
        return out


def _artifacts(outputs: dict) -> dict:
    m = outputs["texthide_masks"]
    art = {"mask_pool": m.pool, "mask_index": m.index}
    if "texthide_unmix" in outputs:
        u = outputs["texthide_unmix"]
        art.update(refined_mask_pool=u.mask_pool, assignment=u.assignment, cluster_class=u.cluster_class)
    return art


@register
class TextHideMasks(_TextHideAttack):
    """TextHide: recover the mask pool and each encryption's mask by clustering sign patterns."""

    name = "texthide_masks"
    Config = MasksAttackConfig
    STAGES = (REFERENCE, MASKS)
    stages = ("texthide_reference", "texthide_masks")

    def run(self, view, oracle, ctx):
        _, outputs, stats, timings = self._pipeline(view, oracle, ctx)
        m = outputs["texthide_masks"]
        unmasked = view.encryptions * m.pool[m.index]
        return ReleaseResult(decryption=unmasked.astype(np.float32), stats=stats, timings=timings,
                             artifacts=_artifacts(outputs))


@register
class TextHideUnmix(_TextHideAttack):
    """TextHide: remove the masks, then unmix (grouping + least squares) into private representations."""

    name = "texthide_unmix"
    Config = UnmixAttackConfig
    uses_oracles = ("masks", "assignment")
    STAGES = (REFERENCE, MASKS, UNMIX)
    stages = ("texthide_reference", "texthide_masks", "texthide_unmix")

    def run(self, view, oracle, ctx):
        _, outputs, stats, timings = self._pipeline(view, oracle, ctx)
        u = outputs["texthide_unmix"]
        return ReleaseResult(decryption=heavy_rows(u), recovered=u.recovered, stats=stats, timings=timings,
                             artifacts=_artifacts(outputs))


@register
class TextHideInvert(_TextHideAttack):
    """TextHide: masks, unmixing, then each representation's nearest candidate sentence (or its words)."""

    name = "texthide_invert"
    uses_models = True           # invert.method = "bow" keeps its inverter in the model cache
    Config = InvertAttackConfig
    uses_oracles = ("masks", "assignment")
    STAGES = (REFERENCE, MASKS, UNMIX, INVERT)
    stages = ("texthide_reference", "texthide_masks", "texthide_unmix", "texthide_invert")

    def __init__(self, config=None, threat=None):
        super().__init__(config, threat)
        if not self.threat.candidates:           # refused before anything runs or is written
            raise HidebenchError(f"{self.name} needs candidate sentences the attacker holds: give --candidates SPEC "
                                 "(e.g. text:rotten_tomatoes) or a recipe whose [attacker] names them")

    def run(self, view, oracle, ctx):
        inp, outputs, stats, timings = self._pipeline(view, oracle, ctx)
        u, inv = outputs["texthide_unmix"], outputs["texthide_invert"]
        if self.config.invert.method == "bow":
            return ReleaseResult(decryption=heavy_rows(u), recovered=u.recovered, texts=list(inv.texts), stats=stats,
                                 timings=timings, artifacts=_artifacts(outputs))
        texts, reps = inp.candidates()
        chosen = reps[inv.candidate]
        heavy = u.assignment[np.arange(len(u.assignment)), np.argmax(u.lambdas, axis=1)]
        return ReleaseResult(decryption=chosen[heavy].astype(np.float32), recovered=chosen.astype(np.float32),
                             texts=[texts.texts[i] for i in inv.candidate], stats=stats, timings=timings,
                             artifacts=_artifacts(outputs))
