"""Inversion to text: from a recovered representation to a sentence.

Threat model (hidebench.text.threat.TextThreatModel.candidates): the attacker holds a corpus of
candidate sentences and the encoder, so it encodes the candidates and returns, for each
recovered representation, the candidate whose representation is nearest in cosine. When the
private sentences are among the candidates (a superset scraped from the same public source: the
stock recipe's whole Rotten Tomatoes corpus, 500 private sentences among 8,030 distractors)
this is identification and exact matches count; with disjoint candidates (the corpus' other
half) it measures how close a sentence an attacker gets (token F1, BLEU).

The learned alternative, which needs no candidate to match the private sentence, names the words
of a representation (bow.py, method 'bow').
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hidebench.pipeline import json_field


@dataclass
class Inversion:
    """candidate[i]: the row of the candidate set chosen for recovered representation i (-1 when
    the text was generated: method 'bow'); cosine[i]: its cosine; texts: generated texts ('bow')."""

    candidate: np.ndarray
    cosine: np.ndarray
    texts: list = json_field(default_factory=list)
    stats: dict = json_field()


def nearest_candidates(recovered: np.ndarray, candidates: np.ndarray, chunk: int = 1024) -> Inversion:
    """The nearest candidate (cosine) of every recovered representation."""
    def unit(x):
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    r, c = unit(recovered), unit(candidates)
    best = np.empty(len(r), dtype=np.int64)
    score = np.empty(len(r), dtype=np.float32)
    for a in range(0, len(r), chunk):
        s = r[a: a + chunk] @ c.T
        best[a: a + chunk] = s.argmax(1)
        score[a: a + chunk] = s.max(1)
    distinct = len(np.unique(best))
    return Inversion(candidate=best, cosine=score,
                     stats={"candidates": int(len(c)), "mean_nearest_cosine": float(score.mean()),
                            "distinct_sentences": int(distinct)})
