"""Metrics of attacks on TextHide: representations, sentences and masks.

Representations: cosine similarity. A decryption holds one vector per encryption; as the
InstaHide Challenge scores an image decryption against the private images in its encryption,
`decryption_cosine` takes, per encryption, the best (max_cosine) and the mean (mean_cosine) cosine
with the private representations mixed into it. Recovered private representations are matched
one to one to the true ones (Hungarian, on cosine): `matched_cosine`.

Sentences (after the same matching): exact match (equal after lower-casing and tokenising),
token F1 (the bag-of-tokens F1 of SQuAD, Rajpurkar et al. 2016) and sentence BLEU-4 (Papineni et
al. 2002, uniform weights, brevity penalty, with add-one smoothing of the 2- to 4-gram precisions:
"BLEU+1", Lin & Och 2004) of the recovered sentence against the private one. Tokens: lower-cased
runs of word characters, and every other non-space character alone.

Masks: `mask_accuracy` compares an attack's mask of every encryption with the true one, raw and
up to the scheme's sign symmetry: flipping dimension j of every mask and of every private
representation together leaves every encryption unchanged, so a dimension's global sign is
identifiable only through what the attacker knows of the representations' distribution.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
from scipy.optimize import linear_sum_assignment

from hidebench.text.types import TextKey, check_vectors
from hidebench.types import HidebenchError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def decryption_cosine(decryption: np.ndarray, key: TextKey) -> dict:
    """max_cosine / mean_cosine: per encryption, the best / mean cosine of its decryption with the
    private representations mixed into it, averaged over encryptions."""
    E = len(key.selection)
    d = check_vectors("decryption", decryption, dim=key.private.shape[1])
    if len(d) != E:
        raise HidebenchError(f"decryption holds {len(d)} vectors; the release has {E} encryptions")
    priv = unit(key.private)[key.private_of()]                     # E x slots x d
    c = np.einsum("ed,esd->es", unit(d), priv)
    return {"max_cosine": float(c.max(1).mean()), "mean_cosine": float(c.mean())}


def matched_cosine(recovered: np.ndarray, private: np.ndarray) -> dict:
    """Recovered vectors matched one to one to the private ones (Hungarian on cosine): the mean
    cosine over the private set (unmatched private vectors count 0), the share above 0.9 and the
    matching (pairs recovered row, private row)."""
    r = check_vectors("recovered representations", recovered, dim=private.shape[1])
    if not len(r):
        raise HidebenchError("no recovered representations to score")
    C = unit(r) @ unit(private).T
    rows, cols = linear_sum_assignment(-C)
    per = C[rows, cols]
    n = len(private)
    return {"cosine": float(per.sum() / n), "share_above_0.9": float((per > 0.9).sum() / n),
            "per_item": per, "match": np.stack([rows, cols], 1)}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_f1(pred: str, ref: str) -> float:
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(pred: str, ref: str, max_n: int = 4) -> float:
    """Sentence BLEU-4 with add-one smoothing of the 2..max_n-gram precisions (module docstring)."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    logs = 0.0
    for n in range(1, max_n + 1):
        pg = Counter(tuple(p[i: i + n]) for i in range(len(p) - n + 1))
        rg = Counter(tuple(r[i: i + n]) for i in range(len(r) - n + 1))
        match, total = sum((pg & rg).values()), max(len(p) - n + 1, 0)
        if n > 1:
            match, total = match + 1, total + 1
        if match == 0 or total == 0:
            return 0.0
        logs += math.log(match / total) / max_n
    bp = 1.0 if len(p) >= len(r) else math.exp(1 - len(r) / len(p))
    return bp * math.exp(logs)


def text_scores(pred: list[str], ref: list[str]) -> dict:
    """Mean exact match, token F1 and BLEU of aligned sentence lists, and the per-pair values."""
    if len(pred) != len(ref):
        raise HidebenchError(f"{len(pred)} recovered sentences for {len(ref)} private ones")
    exact = [float(tokens(a) == tokens(b)) for a, b in zip(pred, ref)]
    f1 = [token_f1(a, b) for a, b in zip(pred, ref)]
    bl = [bleu(a, b) for a, b in zip(pred, ref)]
    return {"exact_match": _mean(exact), "token_f1": _mean(f1), "bleu": _mean(bl),
            "per_item": {"exact": exact, "token_f1": f1, "bleu": bl}}


def _mean(v: list[float]) -> float:
    return float(np.mean(v)) if v else 0.0


def mask_accuracy(pool_est: np.ndarray, index_est: np.ndarray, key: TextKey) -> dict:
    """The attack's mask of every encryption (pool_est[index_est[e]]) against the true one.

    mask_accuracy: share of (encryption, dimension) signs right as the attack oriented them;
    mask_accuracy_up_to_sign: the same after the best flip of each dimension across all masks
    (the scheme's symmetry, module docstring); mask_cluster_ari: adjusted Rand index of the
    encryptions' mask groups; masks_recovered: share of the masks in use whose encryptions the
    attack unmasks with >= 90% of the signs right (up to the symmetry)."""
    from sklearn.metrics import adjusted_rand_score

    pool_est = np.asarray(pool_est)
    index_est = np.asarray(index_est, dtype=np.int64)
    E, d = len(key.mask_index), key.mask_pool.shape[1]
    if index_est.shape != (E,) or pool_est.ndim != 2 or pool_est.shape[1] != d or \
            (E and (index_est.min() < 0 or index_est.max() >= len(pool_est))):
        raise HidebenchError(f"a mask estimate needs {E} indices into a pool of {d}-d masks, got index "
                             f"{index_est.shape} and pool {pool_est.shape}")
    est = np.sign(pool_est[index_est]).astype(np.int8)
    agree = est == key.masks()                                      # E x d
    per_dim = agree.mean(0)
    flip = per_dim < 0.5
    sym = np.where(flip[None, :], ~agree, agree)
    per_enc = sym.mean(1)
    used = np.unique(key.mask_index)
    good = [per_enc[key.mask_index == c].mean() >= 0.9 for c in used]
    return {"mask_accuracy": float(agree.mean()), "mask_accuracy_up_to_sign": float(sym.mean()),
            "mask_cluster_ari": float(adjusted_rand_score(key.mask_index, index_est)),
            "masks_recovered": float(np.mean(good)), "masks_in_use": int(len(used)),
            "dims_flipped": int(flip.sum())}


def score_text_release(decryption: np.ndarray, recovered: np.ndarray | None, texts: list[str] | None,
                       key: TextKey) -> tuple[dict, list[dict]]:
    """The record's metrics of a text attack (decryption cosine; with recovered vectors their
    matched cosine; with recovered texts their sentence scores on the same matching) and the
    gallery rows (private sentence, recovered sentence, cosine, scores), best matches first."""
    out = {"representation": decryption_cosine(decryption, key)}
    rows: list[dict] = []
    if recovered is None or not len(recovered):
        return out, rows
    m = matched_cosine(recovered, key.private)
    out["private_set"] = {"cosine": m["cosine"], "share_above_0.9": m["share_above_0.9"]}
    if texts is not None:
        if len(texts) != len(recovered):
            raise HidebenchError(f"the attack returned {len(texts)} sentences for {len(recovered)} recovered vectors")
        pred = [texts[i] for i in m["match"][:, 0]]
        ref = [key.sentences[j] for j in m["match"][:, 1]]
        s = text_scores(pred, ref)
        n, found = len(key.private), len(pred)
        out["text"] = {name: s[name] * found / n for name in ("exact_match", "token_f1", "bleu")}
        for i, (a, b) in enumerate(zip(pred, ref)):
            rows.append({"private": b, "recovered": a, "cosine": float(m["per_item"][i]),
                         "exact": s["per_item"]["exact"][i], "token_f1": s["per_item"]["token_f1"][i],
                         "bleu": s["per_item"]["bleu"][i]})
        rows.sort(key=lambda r: (-r["token_f1"], -r["cosine"]))
    return out, rows
