"""What the two learned decoders share: the attacker's training data, the deep-decompose network
(trained or from the model cache), its batched inference, and the recovered set.

Imported only when a decoder runs (it imports torch).
"""
from __future__ import annotations

import time

import numpy as np

from hidebench.attacks.attacker_data import attacker_pool, load_aux
from hidebench.attacks.decoders.config import DeepDecomposeConfig
from hidebench.attacks.decoders.mixes import MixSampler, check_aux, patch_bank, scheme_of
from hidebench.attacks.decoders.nets import UNet
from hidebench.attacks.decoders.training import Trained, cached_model, predict, train_decomposer
from hidebench.attacks.grouping.config import GroupingConfig
from hidebench.stage_cache import arrays_digest
from hidebench.threat import Oracle
from hidebench.types import HidebenchError, ImageSet, PublicView


class AttackerData:
    """The aux images (at most aux_max) and, on first use, the public patch bank."""

    def __init__(self, view: PublicView, threat, ctx, aux_max: int, attack: str):
        self.threat, self.ctx = threat, ctx
        t0 = time.perf_counter()
        self.aux: ImageSet = load_aux(threat.aux, ctx, aux_max, needed_for=f"the {attack} attack")
        check_aux(self.aux, view)
        self.load_s = time.perf_counter() - t0
        self.digest = arrays_digest({"images": self.aux.images, "labels": self.aux.labels})
        self._patches = {}

    def patches(self, n: int, seed: int) -> np.ndarray:
        if (n, seed) not in self._patches:
            ss = np.random.SeedSequence(seed)
            pool = attacker_pool(self.threat, self.ctx, int(ss.generate_state(1)[0]))
            self._patches[(n, seed)] = patch_bank(self.aux, pool, n, np.random.default_rng(ss.spawn(1)[0]))
        return self._patches[(n, seed)]

    def spec(self) -> dict:
        """The attacker's data as part of a model's cache key."""
        pool = dict(self.threat.pool) if self.threat.public_pool and self.threat.pool else None
        return {"aux": self.threat.aux, "aux_digest": self.digest, "pool": pool}


def check_fuse(fuse: str, view: PublicView, oracle: Oracle) -> str:
    """The fusion that will run: 'pairs', 'carlini' or 'none' (a refused choice is an error)."""
    if fuse == "pairs" and "pairs" not in oracle:
        raise HidebenchError("fuse = 'pairs' needs the 'pairs' oracle (an ablation: --oracle pairs)")
    if fuse == "carlini" and not view.T:
        raise HidebenchError("fuse = 'carlini' needs T, which the release does not state")
    if fuse == "auto":
        return "pairs" if "pairs" in oracle else ("carlini" if view.T else "none")
    return fuse


def decomposer(view: PublicView, scheme: str, data: AttackerData, cfg: DeepDecomposeConfig, ctx, device, *,
               seed: int) -> Trained:
    """The deep-decompose network for `scheme` with the release's k, mode, c1, c2."""
    sch = scheme_of(view, scheme)
    n_classes = view.labels.shape[1]
    spec = {"scheme": {k: v for k, v in sch.to_dict().items() if k != "T"}, "n_classes": n_classes,
            **data.spec(), "config": cfg.model_dict(), "seed": seed}

    def make():
        return UNet(view.encryptions.shape[-1], cfg.n_out * view.encryptions.shape[-1], n_classes,
                    width=cfg.net.width, depth=cfg.net.depth,
                    residual=cfg.net.residual and scheme == "mixup")

    def train(net):
        sampler = MixSampler(data.aux, n_classes, sch, data.patches(cfg.training.patches, seed) if sch.k > sch.n_private_slots
                             else None, seed=seed, device=device)
        return train_decomposer(net, sampler, cfg, seed=seed, progress=ctx.progress,
                                desc=f"deep_decompose training ({scheme})")

    return cached_model("deep_decompose", spec, make, train, ctx, device, seed=seed)


def decompose(trained: Trained, inputs: np.ndarray, labels: np.ndarray, cfg: DeepDecomposeConfig, device,
              progress: bool) -> np.ndarray:
    """E x n_out x H x W x C predictions for E x H x W x C decoder inputs."""
    out = predict(trained.net, inputs.astype(np.float32), labels.astype(np.float32), batch=cfg.inference_batch,
                  device=device, desc="deep_decompose inference", progress=progress)
    E, C = len(inputs), inputs.shape[-1]
    return out.reshape(E, cfg.n_out, C, *inputs.shape[1:3]).transpose(0, 1, 3, 4, 2)


def groups(view: PublicView, fuse: str, oracle: Oracle, threat, ctx, grouping: GroupingConfig,
           attack: str) -> tuple[np.ndarray, int, dict]:
    """(E x slots group ids, number of groups, timings) from the 'pairs' oracle or the grouping's
    stages (hidebench.attacks.grouping; cached in ctx's stage cache, shared with carlini's)."""
    if fuse == "pairs":
        m = oracle.get("pairs", len(view))
        return np.asarray(m.ids), int(m.n_private), {}
    from hidebench.attacks.grouping.membership import check_release
    from hidebench.attacks.grouping.stages import GROUPING_STAGES, GroupingInputs, check_grouping_inputs
    from hidebench.pipeline import run_pipeline

    inp = GroupingInputs(view, grouping, ctx, check_release(view), threat=threat, attack=f"the {attack} attack")
    check_grouping_inputs(inp)
    run = run_pipeline(GROUPING_STAGES, inp, ctx.stage_cache())
    g = run.outputs["grouping"]
    return np.asarray(g.assignment), int(g.n_clusters), {f"grouping.{k}": v for k, v in run.timings.items()}


def recovered_set(preds: np.ndarray, view: PublicView, cfg: DeepDecomposeConfig, oracle: Oracle, threat, ctx,
                  attack: str = "deep_decompose"):
    """(decryption, recovered or None, stats, timings): per encryption its heaviest prediction,
    replaced by its group's fused estimate when a grouping is available."""
    from hidebench.attacks.decoders.fusion import fuse_predictions

    fuse = check_fuse(cfg.fuse, view, oracle)
    decryption = np.clip(preds[:, 0], -1, 1).astype(np.float32)
    if fuse == "none":
        return decryption, None, {"fuse": "none", "decryption": "per_encryption"}, {}
    A, n, timings = groups(view, fuse, oracle, threat, ctx, cfg.grouping, attack)
    t0 = time.perf_counter()
    fused, matched = fuse_predictions(preds, A, n)
    timings["fusion_s"] = time.perf_counter() - t0
    return fused[matched[:, 0]], fused, {"fuse": fuse, "decryption": "fused", "n_groups": n}, timings
