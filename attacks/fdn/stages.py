"""fdn as declared stages, run by hidebench.pipeline; the `fusion` stage also serves carlini's
`recovery = "fusion"`:

    similarity_model  } the grouping's stages (hidebench.attacks.grouping.stages), with the
    grouping          } comparative network as the similarity
    fusion            the fusion-denoising network (trained, or from the model cache) on every
                      group of the grouping: one private image per group
    decryption        per encryption, the fused image of the group it shows (a gather: not
                      cached)

The inputs are the grouping's (`GroupingInputs`) plus a `fusion` config (FusionConfig); the
fusion stage's key holds that config, the release, the attacker's data and its seed, and
through its upstream the grouping's output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hidebench.attacks.attacker_data import load_aux
from hidebench.attacks.fdn.config import FusionConfig
from hidebench.attacks.fdn.groups import release_groups
from hidebench.attacks.grouping.groups import Grouping, shown_groups
from hidebench.attacks.grouping.stages import GROUPING_STAGES, GroupingInputs
from hidebench.context import ExecutionContext
from hidebench.pipeline import Stage, expect, json_field
from hidebench.stage_cache import arrays_digest
from hidebench.threat import Membership, ReleaseThreatModel
from hidebench.types import HidebenchError, ImageSet, PublicView


class FdnInputs(GroupingInputs):
    """The grouping's inputs plus the fusion network's config."""

    def __init__(self, view: PublicView, grouping, fusion: FusionConfig, ctx: ExecutionContext, n_private: int, *,
                 threat: ReleaseThreatModel | None = None, pairs: Membership | None = None,
                 assignment: Membership | None = None, attack: str = "the fdn attack"):
        super().__init__(view, grouping, ctx, n_private, threat=threat, pairs=pairs, assignment=assignment,
                         attack=attack)
        self.fusion = fusion


def fusion_aux(inp: GroupingInputs) -> ImageSet:
    """The aux images the fusion network trains on (at most fusion.training.aux_max), loaded once."""
    from hidebench.attacks.decoders.mixes import check_aux

    def load():
        t0 = time.perf_counter()
        aux = load_aux(inp.aux_spec, inp.ctx, inp.fusion.training.aux_max, needed_for=inp.attack)
        check_aux(aux, inp.view)
        inp.timings["load_fusion_aux_s"] = time.perf_counter() - t0
        return aux

    return inp.once("fusion_aux", load)


def _data_spec(inp: GroupingInputs) -> dict:
    aux = fusion_aux(inp)
    return {"aux": inp.aux_spec, "aux_digest": arrays_digest({"images": aux.images, "labels": aux.labels}),
            "pool": inp.pool_config, "pool_draws": inp.grouping.similarity.rounds.pool_draws if inp.pool_config else None}


# ----------------------------------------------------------------------------- fusion

@dataclass
class Fusion:
    """Output of the fusion stage: one image per group (n x H x W x C in [-1, 1]), the group
    sizes, and the network's record (model id, training time and curves, cached or not)."""

    images: np.ndarray
    sizes: np.ndarray
    stats: dict = json_field()


def fusion_stage(inp: GroupingInputs, grouping: Grouping) -> Fusion:
    from hidebench.attacks.fdn.training import fuse, fusion_network

    cfg: FusionConfig = inp.fusion
    view = inp.view
    trained = fusion_network(view, fusion_aux(inp), inp.pool(), cfg, inp.ctx, inp.device, seed=inp.seed("fusion"),
                             data_spec=_data_spec(inp))
    n = int(grouping.n_clusters)
    groups = release_groups(view.labels, grouping.assignment, grouping.cluster_class, n)
    t0 = time.perf_counter()
    images = fuse(trained, np.abs(view.encryptions), groups, view.labels.shape[1], batch=cfg.inference_batch,
                  device=inp.device, progress=inp.ctx.progress)
    stats = {"model": trained.entry, "cached": trained.cached, "train_s": round(trained.train_s, 1),
             "curves": trained.curves, "inference_s": round(time.perf_counter() - t0, 2)}
    return Fusion(images=images, sizes=groups.sizes(), stats=stats)


def _fusion_key(inp: GroupingInputs) -> dict:
    return {"view": inp.view_digest, "fusion": inp.fusion.to_dict(), "data": _data_spec(inp), "seed": inp.seed("fusion")}


def _check_fusion(f: Fusion, inp: GroupingInputs) -> None:
    expect(f.images, "images", (None,) + inp.view.encryptions.shape[1:], low=-1, high=1.0001)
    expect(f.sizes, "sizes", (len(f.images),), kind="i", low=0)


FUSION_STAGE = Stage("fusion", fusion_stage, Fusion, _fusion_key, upstream=("grouping",), check=_check_fusion)


# ----------------------------------------------------------------------------- decryption

@dataclass
class Decryption:
    """recovered: the fused images (one per group); decryption: per encryption the fused image
    of the group it shows (`source`: grouping.shown_groups), in the challenge's format."""

    recovered: np.ndarray
    decryption: np.ndarray
    source: np.ndarray


def decryption_stage(inp: GroupingInputs, grouping: Grouping, fusion: Fusion) -> Decryption:
    source = shown_groups(grouping)
    recovered = np.clip(fusion.images, -1, 1).astype(np.float32)
    return Decryption(recovered=recovered, decryption=recovered[source], source=source)


DECRYPTION_STAGE = Stage("decryption", decryption_stage, Decryption, lambda inp: {}, upstream=("grouping", "fusion"),
                         cached=False)

STAGES = [*GROUPING_STAGES, FUSION_STAGE, DECRYPTION_STAGE]


def check_fusion_inputs(inp: GroupingInputs) -> None:
    """Refuse, before any stage runs, what the fusion network cannot train on or fuse: no aux
    data, no T, groups too large for the config."""
    if not inp.aux_spec:
        raise HidebenchError(f"{inp.attack} trains its fusion network on auxiliary images, but the threat model grants "
                             "none: give aux data (e.g. --aux lfw[1::2])")
    if inp.view.scheme != "instahide":
        raise HidebenchError(f"{inp.attack}'s fusion network recovers InstaHide releases; this one is "
                             f"{inp.view.scheme!r}")
    inp.fusion.check_release(int(inp.view.T))
