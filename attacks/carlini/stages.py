"""The Carlini et al. attack (arXiv 2011.05315) as declared stages, run by hidebench.pipeline.

    similarity_model  } the grouping's stages (hidebench.attacks.grouping.stages): which
    grouping          } private images each encryption mixes
    decoder_prior     optional (prior.decoder): each group's aux class mean, or a learned
                      decoder's images fused per group: a prior on the signs of the next two
                      stages (InstaHide only)
    regression        the private images up to one sign per position, with the regression-driven
                      reassignment rounds (regression.py, reassignment.py)
    signs             the sign per position left open (signs.py; InstaHide only)
    decryption        each encryption's shown group's image (grouping.shown_groups; a gather: not cached)

With recovery 'fusion' the stages after the grouping are fdn's (hidebench.attacks.fdn.stages):
the fusion-denoising network on every group, then the same gather (`stages_for`).

Each stage is a function of `AttackInputs` (the grouping's inputs plus the carlini config and
the 'lambdas' oracle part) and of its upstream stages' outputs, and returns a small dataclass.
Its cache key holds the config sections it reads, the release's digest, its seed
(hidebench.pipeline.stage_seed of the run's seed and the stage's name) and the oracle parts it
consumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hidebench.attacks.aux_mean import class_means
from hidebench.attacks.carlini.config import CarliniConfig
from hidebench.attacks.carlini.global_signs import COLOUR_T, aux_statistics, fix_global_signs
from hidebench.attacks.carlini.mixing import aligned_coefficients
from hidebench.attacks.carlini.reassignment import energy_features, reassign, split_overfull
from hidebench.attacks.carlini.regression import regress
from hidebench.attacks.fdn.stages import DECRYPTION_STAGE as FUSION_DECRYPTION_STAGE
from hidebench.attacks.fdn.stages import FUSION_STAGE, check_fusion_inputs
from hidebench.attacks.grouping.groups import Grouping, shown_groups
from hidebench.attacks.grouping.membership import lambdas_from_labels
from hidebench.attacks.grouping.stages import GROUPING_STAGES, GroupingInputs, check_grouping_inputs
from hidebench.context import ExecutionContext
from hidebench.pipeline import Stage, arrays_field, expect, json_field
from hidebench.threat import Coefficients, Membership, ReleaseThreatModel
from hidebench.types import HidebenchError, PublicView


class AttackInputs(GroupingInputs):
    """What the stages read: the grouping's inputs (GroupingInputs: the release, the grouping's
    sections of `config`, the context, the threat model, the oracle parts pairs / assignment)
    plus the whole carlini config, its fusion section (what fdn's fusion stage reads) and the
    'lambdas' oracle part."""

    def __init__(self, view: PublicView, config: CarliniConfig, ctx: ExecutionContext, n_private: int, *,
                 threat: ReleaseThreatModel | None = None, pairs: Membership | None = None,
                 assignment: Membership | None = None, lambdas: Coefficients | None = None):
        super().__init__(view, config.grouping(), ctx, n_private, threat=threat, pairs=pairs, assignment=assignment,
                         attack="the carlini attack")
        self.config, self.lambdas, self.fusion = config, lambdas, config.fusion

    @property
    def grey(self) -> bool:
        """Solve the three channels as one: colour 'grey', or 'auto' with grey aux images."""
        def decide():
            if self.config.colour != "auto":
                return self.config.colour == "grey"
            aux = self.aux()
            return aux is not None and bool(np.abs(aux.images - aux.images[..., :1]).max() < 2 / 255)

        return self.once("grey", decide)

    @property
    def prior(self) -> str:
        """The sign prior in use (config prior.decoder, 'auto' resolved against the threat model
        and whether the aux classes are the release's)."""
        auto = self.config.prior.decoder == "auto"          # (loads the aux data only to resolve 'auto')
        return self.config.prior.resolved(bool(self.aux_spec), auto and self.aux_is_proxy)

    @property
    def aux_is_proxy(self) -> bool:
        """Granted aux data whose classes are not the release's (`aux_classes_match`)."""
        return bool(self.aux_spec) and self.once("aux_is_proxy",
                                                 lambda: not aux_classes_match(self.view, self.aux().classes))

    @property
    def reassignment_rounds(self) -> int:
        """Reassignment runs on the attacker's own grouping of cross-dataset InstaHide (two slots)."""
        v = self.view
        own = self.assignment is None and v.scheme == "instahide" and v.n_private_slots == 2
        return self.config.reassignment.rounds_for(self.scalable, int(v.T)) if own else 0


# ----------------------------------------------------------------------------- decoder_prior

@dataclass
class DecoderPrior:
    """An estimate of every private image (n x 32 x 32 x 3, signs included): its group's aux
    class mean ('aux_mean'), or a learned decoder's per-encryption predictions fused over the
    grouping's groups ('deep_decompose')."""

    images: np.ndarray
    stats: dict = json_field()


def decoder_prior_stage(inp: AttackInputs, grouping: Grouping) -> DecoderPrior:
    if inp.prior == "aux_mean":
        return _aux_mean_prior(inp, grouping)
    from hidebench.attacks.decoders.decomposition import AttackerData, decompose, decomposer
    from hidebench.attacks.decoders.fusion import fuse_predictions
    from hidebench.attacks.decoders.training import decoder_input

    cfg = inp.config.prior.decoder_config
    data = AttackerData(inp.view, inp.threat, inp.ctx, cfg.training.aux_max, "carlini prior")
    trained = decomposer(inp.view, inp.view.scheme, data, cfg, inp.ctx, inp.device, seed=inp.seed("deep_decompose"))
    preds = decompose(trained, decoder_input(inp.view.encryptions, inp.view.scheme), inp.view.labels, cfg,
                      inp.device, inp.ctx.progress)
    images, _ = fuse_predictions(preds, grouping.assignment, int(grouping.n_clusters))
    return DecoderPrior(images=images, stats={"decoder": "deep_decompose", "model": trained.entry,
                                              "cached": trained.cached, "train_s": trained.train_s})


def aux_classes_match(view: PublicView, aux_classes: list[str]) -> bool:
    """Whether the aux data's classes are the release's: the same names in the same order, or
    no names on either side (a bare 2020-format release states none: its names are the class
    indices)."""
    names = list(view.class_names)
    unnamed = not names or names == [str(i) for i in range(len(names))]
    return unnamed or not aux_classes or names == list(aux_classes)


def _aux_mean_prior(inp: AttackInputs, grouping: Grouping) -> DecoderPrior:
    """Each group's prior image: the mean aux image of the group's class (the overall aux mean
    for a group of unknown class), the guess of the `aux_mean` baseline. Where the private
    images share a layout (faces, centred objects) it fixes the signs that the per-position
    votes leave open when the grouping is noisy. Where the aux classes are not the release's
    (`aux_classes_match`: aux data that is only a proxy, e.g. CIFAR-10 classes for a release
    labelled c0..c9), a class's mean says nothing about its images: every group gets the
    overall aux mean, a prior on natural images only."""
    aux = inp.aux()
    overall = aux.images.mean(0, keepdims=True)
    cc = np.asarray(grouping.cluster_class, dtype=np.int64)
    if inp.aux_is_proxy:
        return DecoderPrior(images=np.repeat(overall, len(cc), 0).astype(np.float32),
                            stats={"decoder": "aux_mean", "aux_images": len(aux), "aux_classes": "proxy: overall mean"})
    means = np.concatenate([class_means(aux.images, aux.labels, inp.view.labels.shape[1]), overall])  # row -1: unknown
    return DecoderPrior(images=means[np.where(cc >= 0, cc, -1)].astype(np.float32),
                        stats={"decoder": "aux_mean", "aux_images": len(aux), "aux_classes": "the release's"})


def _decoder_prior_key(inp: AttackInputs) -> dict:
    if inp.prior == "aux_mean":
        key = {"view": inp.view_digest, "prior": "aux_mean", "aux": inp.aux_digest()}
        if inp.aux_is_proxy:                                       # (matching classes: the key as before)
            key["aux_classes"] = "proxy"
        return key
    return {"view": inp.view_digest, "prior": inp.config.section_dict("prior")["prior"], "aux": inp.aux_spec,
            "pool": inp.pool_config, "seed": inp.seed("deep_decompose")}


def _uses_prior(inp: AttackInputs) -> bool:
    return inp.prior != "none" and inp.view.scheme == "instahide"


def _prior_weight(inp: AttackInputs) -> float:
    """The prior's field in the sign synchronisation relative to each image's total vote:
    aux_votes encryptions' worth for the aux-mean prior (an image sits in E * slots / n
    encryptions), prior.weight for the decoder's."""
    cfg = inp.config.prior
    if inp.prior == "aux_mean":
        return cfg.aux_votes * inp.n_private / (len(inp.view) * inp.view.n_private_slots)
    return cfg.weight


# ----------------------------------------------------------------------------- regression

@dataclass
class Regression:
    """Output of the regression stage. images: n x 32 x 32 x C (C = 1 when the channels were
    solved as one), signs synchronised per position; lambdas: E x slots estimated coefficients;
    noise_mean / noise_energy: the fitted public-noise model; steps: the intermediate estimates
    ('magnitudes', 'synced', 'altmin'; 3 channels); assignment / cluster_class: the grouping
    after the reassignment rounds (a split group takes its class); lambdas_from_labels / split:
    the coefficients the last regression started from (from the labels, or the 'lambdas'
    oracle) and the rows whose label held only a sum; slot_margin / fit: the last round's
    `Reassignment` margins per slot and pair fits (zeros without rounds)."""

    images: np.ndarray
    lambdas: np.ndarray
    noise_mean: np.ndarray
    noise_energy: np.ndarray
    assignment: np.ndarray
    cluster_class: np.ndarray
    lambdas_from_labels: np.ndarray
    split: np.ndarray
    slot_margin: np.ndarray
    fit: np.ndarray
    steps: dict = arrays_field()
    stats: dict = json_field()
    timings: dict = json_field()    # seconds summed over the regressions and reassignment rounds


def _coefficients(inp: AttackInputs, assignment: np.ndarray, cluster_class: np.ndarray):
    if inp.lambdas is not None:
        return aligned_coefficients(inp.lambdas.values, inp.lambdas.ids, assignment, inp.view.labels, cluster_class)
    return lambdas_from_labels(inp.view.labels, assignment, cluster_class)


def _solve(inp: AttackInputs, n: int, A, L, split, weights=None, prior=None, smooth=True):
    """One regression (smooth: with the image prior); with `grey`, the channels are extra
    observations of one channel."""
    view, cfg = inp.view, inp.config
    kw = dict(scheme=view.scheme, cfg=cfg.regression, sync=cfg.sign_sync, seed=inp.seed("regression"),
              device=inp.device, progress=inp.ctx.progress, prior_weight=_prior_weight(inp), sparse=inp.scalable,
              smooth=smooth)
    if not inp.grey:
        return regress(view.encryptions, A, L, n, split=split, weights=weights, prior=prior, **kw)
    C = view.encryptions.shape[-1]
    enc = np.moveaxis(view.encryptions, 3, 0).reshape((C * len(view),) + view.encryptions.shape[1:3] + (1,))
    res = regress(enc, np.tile(A, (C, 1)), np.tile(L, (C, 1)), n, split=np.tile(split, C),
                  weights=None if weights is None else np.tile(weights, C),
                  prior=None if prior is None else prior.mean(-1, keepdims=True), **kw)
    res.lambdas = res.lambdas.reshape(C, len(view), -1).mean(0)
    res.images = np.repeat(res.images, C, axis=-1)
    res.noise_mean = np.repeat(res.noise_mean, C, axis=-1)
    res.noise_energy = np.repeat(res.noise_energy, C, axis=-1)
    res.stages = {k: np.repeat(v, C, axis=-1) for k, v in res.stages.items()}
    return res


def regression_stage(inp: AttackInputs, grouping: Grouping, decoder_prior: DecoderPrior | None = None) -> Regression:
    """Regression on the grouping, then `reassignment_rounds` of: move every encryption to the
    pair of groups that explains it best (reassignment.py), let dead groups take half of an
    over-full one (every round but the last: `split_overfull`), optionally weigh rows by their
    fit margin, regress again; only the last regression has the image prior (regression.tv_weight).
    A decoder prior (its images) steers the sign synchronisation."""
    cfg = inp.config.reassignment
    n, classes = int(grouping.n_clusters), np.asarray(grouping.cluster_class, dtype=np.int64)
    prior = None if decoder_prior is None else decoder_prior.images
    A = np.asarray(grouping.assignment, dtype=np.int64)
    L, split = _coefficients(inp, A, classes)
    rounds = inp.reassignment_rounds
    res = _solve(inp, n, A, L, split, prior=prior, smooth=not rounds)
    timings = dict(res.timings)
    changed, moves = [], []
    slot_margin, fit = np.zeros(A.shape, np.float32), np.zeros(len(A), np.float32)
    for r in range(rounds):
        t0 = time.perf_counter()
        features = inp.once("energy_features", lambda: energy_features(inp.view.encryptions, inp.device))
        new = reassign(inp.view.encryptions, inp.view.labels, classes, res.images, res.noise_mean,
                       candidates=cfg.candidates, device=inp.device, features=features)
        newA, slot_margin, fit = new.assignment, new.slot_margin, new.fit
        if cfg.split_below and r < rounds - 1:
            newA, classes, moved = split_overfull(newA, classes, features, below=cfg.split_below,
                                                  above=cfg.split_above)
            moves.append([list(m) for m in moved])
        timings["reassignment_s"] = timings.get("reassignment_s", 0.0) + time.perf_counter() - t0
        # confidence of each row's new pair: its fit margin over the runner-up, m / (m + median)
        margin = new.margin
        weights = margin / (margin + max(float(np.median(margin)), 1e-9)) if cfg.margin_weights else None
        changed.append(float((np.sort(newA, 1) != np.sort(A, 1)).any(1).mean()))
        A = newA
        L, split = _coefficients(inp, A, classes)
        res = _solve(inp, n, A, L, split, weights, prior=prior, smooth=r == rounds - 1)
        for k, v in res.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    stats = dict(res.stats, reassign_changed_fraction=changed)
    if moves:
        stats["split_groups"] = moves          # per round: [dead group, over-full group, rows moved]
    if inp.grey:
        stats["colour"] = "grey"
    return Regression(images=res.images[..., :1] if inp.grey else res.images, lambdas=res.lambdas,
                      noise_mean=res.noise_mean, noise_energy=res.noise_energy, assignment=A, cluster_class=classes,
                      lambdas_from_labels=L, split=split, slot_margin=slot_margin, fit=fit, steps=res.stages,
                      stats=stats, timings=timings)


def _regression_key(inp: AttackInputs) -> dict:
    reassignment = inp.config.section_dict("reassignment")
    reassignment["reassignment"].pop("shown_by_fit")            # the decryption's choice, not the regression's
    key = {"view": inp.view_digest, **inp.config.section_dict("regression", "sign_sync"), **reassignment,
           "rounds": inp.reassignment_rounds, "grey": inp.grey, "seed": inp.seed("regression"),
           "oracle_lambdas": inp.oracle_digest("lambdas")}
    if _uses_prior(inp):
        key["prior_weight"] = _prior_weight(inp)
    if inp.scalable:
        key["path"] = "scalable"
    return key


# ----------------------------------------------------------------------------- signs

@dataclass
class Signs:
    """Output of the signs stage: the regression's images with one sign chosen per position."""

    images: np.ndarray
    stats: dict = json_field()


def sign_prior(inp: AttackInputs, channels: int):
    """Per-position mean and variance of the aux images (their first `channels` channels), the
    prior of the sign per position; None without aux data."""
    aux = inp.aux()
    st = aux_statistics(aux.images) if aux is not None else None
    return None if st is None else (st[0][..., :channels], st[1][..., :channels])


def signs_stage(inp: AttackInputs, regression: Regression, decoder_prior: DecoderPrior | None = None) -> Signs:
    C = regression.images.shape[-1]
    prior = None
    if decoder_prior is not None:
        prior = decoder_prior.images if C == decoder_prior.images.shape[-1] else decoder_prior.images.mean(-1, keepdims=True)
    x, stats = fix_global_signs(regression.images, inp.config.signs, sign_prior(inp, C), prior=prior,
                                prior_weight=inp.config.prior.global_weight)
    return Signs(images=x, stats=stats)


def _signs_key(inp: AttackInputs) -> dict:
    key = {**inp.config.section_dict("signs"), "aux": inp.aux_digest(), "grey": inp.grey}
    if key["aux"] is None and inp.config.signs.colour_flip:
        key["colour_t"] = COLOUR_T
    if _uses_prior(inp):
        key["prior_global_weight"] = inp.config.prior.global_weight
    return key


# ----------------------------------------------------------------------------- decryption

@dataclass
class Decryption:
    """recovered: the private set (n x 32 x 32 x 3, in [-1, 1]); decryption: per encryption the
    recovered image of the group it shows (`source`: `shown_groups`), in the challenge's format."""

    recovered: np.ndarray
    decryption: np.ndarray
    source: np.ndarray


# A slot margin this wide marks both of a row's groups as sure (shown_by_fit). On a
# Tiny-ImageNet release (docs/history.md, 2026-12-06) 0.04 to 0.06 gave the same Max_SSIM.
SURE_SLOT_MARGIN = 0.05


def shown_by_fit(source: np.ndarray, regression: Regression) -> np.ndarray:
    """Re-choose the group each decryption shows where both of the row's groups are sure (each
    won the last reassignment round over its best replacement by SURE_SLOT_MARGIN): the group
    whose image best fits the encryptions it was assigned (mean pair fit over its rows, a
    stand-in for its image's quality: a group that still holds some wrong rows regresses into a
    worse image). Max_SSIM scores a decryption against the better of its two private images, so
    where both groups are right the better image is the one to show."""
    A = np.asarray(regression.assignment, dtype=np.int64)
    n = len(regression.images)
    size = np.bincount(A.ravel(), minlength=n)
    quality = np.bincount(A.ravel(), weights=np.repeat(regression.fit, A.shape[1]), minlength=n) / np.maximum(size, 1)
    sure = (regression.slot_margin > SURE_SLOT_MARGIN).all(1)
    best = A[np.arange(len(A)), np.argmax(quality[A], axis=1)]
    return np.where(sure, best, source)


def decryption_stage(inp: AttackInputs, grouping: Grouping, regression: Regression,
                     signs: Signs | None = None) -> Decryption:
    x = signs.images if signs is not None else regression.images
    if x.shape[-1] != inp.view.encryptions.shape[-1]:
        x = np.repeat(x, inp.view.encryptions.shape[-1], axis=-1)
    recovered = np.clip(x, -1, 1).astype(np.float32)
    source = shown_groups(grouping, regression.assignment, regression.lambdas)
    if inp.config.reassignment.shown_by_fit and inp.reassignment_rounds:
        source = shown_by_fit(source, regression)
    return Decryption(recovered=recovered, decryption=recovered[source].astype(np.float32), source=source)


# ----------------------------------------------------------------------------- cached outputs' checks
# Each raises ValueError on a cached output that this release and config cannot use (a cache
# folder may come from elsewhere): the entry is then recomputed instead of failing a later stage.

def _check_images(images, name: str, n: int | None, channels: tuple[int, ...], inp: AttackInputs) -> None:
    H, W, C = inp.view.encryptions.shape[1:]
    expect(images, name, (n, H, W, None))
    if np.shape(images)[-1] not in channels:
        raise ValueError(f"{name} has {np.shape(images)[-1]} channels, expected {channels}")


def _check_decoder_prior(p: DecoderPrior, inp: AttackInputs) -> None:
    _check_images(p.images, "images", None, (inp.view.encryptions.shape[-1],), inp)


def _check_regression(r: Regression, inp: AttackInputs) -> None:
    E, slots, C = len(inp.view), inp.view.n_private_slots, inp.view.encryptions.shape[-1]
    _check_images(r.images, "images", None, (1, C), inp)
    n = len(r.images)
    expect(r.assignment, "assignment", (E, slots), kind="i", low=0, high=n)
    expect(r.cluster_class, "cluster_class", (n,), kind="i", low=-1, high=inp.view.labels.shape[1])
    for name in ("lambdas", "lambdas_from_labels", "slot_margin"):
        expect(getattr(r, name), name, (E, slots))
    expect(r.fit, "fit", (E,))
    expect(r.split, "split", (E,), kind="b")
    _check_images(r.noise_mean[None], "noise_mean", 1, (1, C), inp)
    _check_images(r.noise_energy[None], "noise_energy", 1, (1, C), inp)


def _check_signs(s: Signs, inp: AttackInputs) -> None:
    _check_images(s.images, "images", None, (1, inp.view.encryptions.shape[-1]), inp)


STAGES = [
    *GROUPING_STAGES,
    Stage("decoder_prior", decoder_prior_stage, DecoderPrior, _decoder_prior_key, upstream=("grouping",),
          when=_uses_prior, check=_check_decoder_prior),
    Stage("regression", regression_stage, Regression, _regression_key, upstream=("grouping", "decoder_prior"),
          check=_check_regression),
    Stage("signs", signs_stage, Signs, _signs_key, upstream=("regression", "decoder_prior"),
          when=lambda inp: inp.view.scheme == "instahide", check=_check_signs),
    Stage("decryption", decryption_stage, Decryption, lambda inp: {}, upstream=("grouping", "regression", "signs"),
          cached=False),
]


# Recovery 'fusion': the grouping, then fdn's fusion network and its decryption.
FUSION_STAGES = [*GROUPING_STAGES, FUSION_STAGE, FUSION_DECRYPTION_STAGE]


def stages_for(config: CarliniConfig) -> list[Stage]:
    """The stages of a run: the regression's (STAGES) or, with recovery 'fusion', FUSION_STAGES."""
    return FUSION_STAGES if config.recovery == "fusion" else STAGES


def check_inputs(inp: AttackInputs) -> None:
    """Refuse, before any stage runs, inputs a stage would trip over: the grouping's
    (check_grouping_inputs), a 'lambdas' oracle that does not match the release, a prior without
    aux data, a fusion network it cannot train (check_fusion_inputs)."""
    check_grouping_inputs(inp)
    if inp.config.recovery == "fusion":
        if inp.lambdas is not None:
            raise HidebenchError("the 'lambdas' oracle feeds the regression; recovery = 'fusion' reads the "
                                 "coefficients from the labels")
        check_fusion_inputs(inp)
        return
    if inp.lambdas is not None and np.asarray(inp.lambdas.ids).shape != (len(inp.view), inp.view.n_private_slots):
        raise HidebenchError(f"the 'lambdas' oracle covers ids of shape {np.asarray(inp.lambdas.ids).shape}, "
                             f"the release {len(inp.view)} encryptions x {inp.view.n_private_slots} private slots")
    if _uses_prior(inp) and not inp.aux_spec:
        raise HidebenchError(f"prior.decoder {inp.prior!r} is built from auxiliary images, but the "
                             "threat model grants none: give aux data or set prior.decoder = 'none'")
