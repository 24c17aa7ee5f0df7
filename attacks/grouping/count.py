"""How many private images does a release hold, when it states neither T nor n_priv?

The InstaHide Challenge states "100 private images, 50 encryptions each" only in prose. The
labels narrow T to a few candidates (`mixing.plausible_T`: class slot counts must be whole
multiples of the slots each image heads) but cannot tell T from T / 2. The similarity of
stage 1 can: an encryption shares a private image with about 2 (2T - 1) others, so the fewer
the private images, the larger the share of its label-consistent neighbours it shares one
with. A first moment of the similarity does not separate that share from how alike the
release's images of one class happen to be; the upper tail does. Statistic: over sampled
rows, the share of a row's label-consistent scores above its median + 2 robust standard
deviations (median absolute deviation).

The statistic's value under each candidate is not modelled but simulated: the attacker
encrypts its own aux images with the release's scheme, as many per class as the candidate
implies (`mixing.class_image_counts`), and scores them with the same similarity. The candidate
whose simulations lie nearest the release's value wins when it is at least `min_ratio` times
nearer than every other; otherwise the estimate is ambiguous and the attack asks for T. A
candidate the aux data cannot simulate (too few images of a class) cannot be ruled out.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.grouping.membership import class_image_counts, class_slot_counts, label_support, plausible_T
from hidebench.types import ImageSet, PublicView


def tail_share(z: np.ndarray, support: np.ndarray, rng, *, rows: int = 2000) -> float:
    """Mean over `rows` sampled encryptions of the share of their label-consistent similarities
    (unit rows z) above median + 2 robust standard deviations."""
    E = len(z)
    r = rng.choice(E, size=min(rows, E), replace=False)
    S = z[r] @ z.T
    consistent = (support[r].astype(np.float32) @ support.T.astype(np.float32)) > 0
    consistent[np.arange(len(r)), r] = False
    out = []
    for s, ok in zip(S, consistent):
        x = s[ok]
        if len(x) < 10:
            continue
        med = np.median(x)
        mad = 1.4826 * np.median(np.abs(x - med))
        out.append(float((x > med + 2 * mad).mean()))
    return float(np.mean(out)) if out else float("nan")


@dataclass
class CountEstimate:
    """The estimate: T (None when ambiguous), how it was reached ('labels': one candidate left;
    'similarity': the simulation test), the release's statistic, and per candidate T its n,
    label p-value and simulated statistic (mean, sd; None when the aux data cannot simulate
    it). sureness: 1 - (distance to the winner) / (distance to the runner-up), in [0, 1]."""

    T: int | None
    source: str
    statistic: float | None = None
    sureness: float | None = None
    candidates: list = field(default_factory=list)

    def stats(self) -> dict:
        return {"T": self.T, "source": self.source, "statistic": self.statistic, "sureness": self.sureness,
                "candidates": self.candidates}


def _simulate(view: PublicView, aux: ImageSet, pool, embed_fn, n_c: np.ndarray, T: int, reps: int, seed: int,
              e_max: int) -> list[float] | None:
    """The statistic on `reps` attacker releases with n_c aux images per class; None when a class
    has too few aux images. Large releases are simulated at a smaller T (about e_max
    encryptions): the share of sharing neighbours is about 4 T / (E * consistent share), which
    keeps its value when T and E shrink together."""
    by_class = [np.flatnonzero(aux.labels == c) for c in range(len(n_c))]
    if any(len(ix) < m for ix, m in zip(by_class, n_c)):
        return None
    n = int(n_c.sum())
    T_sim = int(max(2, min(T, round(e_max / n))))
    data = AttackerEncryptions(view, aux, n_images=n, T=T_sim, pool=pool, seed=seed)
    out = []
    for _ in range(reps):
        idx = np.concatenate([data.rng.choice(ix, size=m, replace=False) for ix, m in zip(by_class, n_c) if m])
        v, _ = data.encrypt_subset(idx)
        out.append(tail_share(embed_fn(v.encryptions), label_support(v.labels), data.rng))
    return out


def estimate_T(view: PublicView, aux: ImageSet | None, pool, embed_fn: Callable[[np.ndarray], np.ndarray] | None, *,
               seed: int = 0, reps: int = 4, min_ratio: float = 2.0, e_max: int = 3000,
               progress: bool = False) -> CountEstimate:
    """Estimate T for a release that does not state it (see module docstring). embed_fn maps
    encryptions to unit rows (the attack's similarity); aux and embed_fn may be None when the
    labels leave one candidate. A pool of several recipe-sized screens lends each simulated
    release one screen's worth of its regions, as a release has (AttackerEncryptions)."""
    from hidebench.progress import bar

    slots = view.n_private_slots
    E = len(view)
    cands = [(T, p) for T, p in plausible_T(view.labels, slots) if T >= 2]
    if len(cands) <= 1 or aux is None or embed_fn is None:
        return CountEstimate(T=cands[0][0] if len(cands) == 1 else None, source="labels",
                             candidates=[{"T": T, "n": E // T, "p_labels": p} for T, p in cands])
    rng = np.random.default_rng(seed)
    stat = tail_share(embed_fn(view.encryptions), label_support(view.labels), rng)
    counts = class_slot_counts(view.labels, slots)
    rows = []
    for i, (T, p) in enumerate(bar(cands, enabled=progress, desc="carlini: estimating T", leave=False)):
        n = E // T
        n_c = class_image_counts(counts, slots, T, n) if counts is not None else None
        sims = None if n_c is None else _simulate(view, aux, pool, embed_fn, n_c, T, reps, seed + 1 + i, e_max)
        rows.append({"T": T, "n": n, "p_labels": p,
                     "simulated": None if sims is None else [float(np.mean(sims)), float(np.std(sims, ddof=1))]})
    dist = np.array([abs(stat - r["simulated"][0]) if r["simulated"] else np.nan for r in rows])
    for r, d in zip(rows, dist):
        r["distance"] = None if np.isnan(d) else float(d)
    est = CountEstimate(T=None, source="similarity", statistic=stat, candidates=rows)
    if np.isnan(dist).all() or np.isnan(stat):
        return est
    best = int(np.nanargmin(dist))
    others = np.delete(dist, best)         # at least one: estimation starts from two candidates
    runner_up = float(np.min(np.where(np.isnan(others), 0.0, others)))   # unsimulated: cannot be ruled out
    est.sureness = float(1 - dist[best] / runner_up) if runner_up > 0 else 0.0
    if dist[best] * min_ratio <= runner_up:
        est.T = rows[best]["T"]
    return est
