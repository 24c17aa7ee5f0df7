"""What the attacker knows of the representations before looking at the release: it holds the
encoder and some sentences (its candidates, and the public corpus of an inter release), so it can
simulate mixtures as the release makes them and measure their mean and, per dimension, how
biased their sign is. Sentence representations are far from centred (MiniLM's mean-pooled
vectors share most of their signs), and the mask cannot hide that: the bias is what makes the
masks recoverable (masks.py), and the mean orients each recovered mask."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hidebench.pipeline import json_field


@dataclass
class ReferenceStats:
    """mean: the mean of a simulated mixture (zeros without reference sentences); bias: per
    dimension |E sign(mixture)| in [0, 1] (ones without); public_mean: the mean representation of
    the public corpus (zeros unless granted)."""

    mean: np.ndarray
    bias: np.ndarray
    public_mean: np.ndarray
    stats: dict = json_field()


def mixture_coefficients(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n x k coefficients |g| / sum|g|, g ~ N(0, I_k): TextHide's."""
    lam = np.abs(rng.standard_normal((n, k)))
    return lam / lam.sum(1, keepdims=True)


def reference_stats(reps: np.ndarray | None, dim: int, k: int, n_sim: int, rng: np.random.Generator,
                    public: np.ndarray | None = None) -> ReferenceStats:
    """The statistics of simulated k-mixtures of `reps` (module docstring)."""
    pub_mean = np.zeros(dim, np.float32) if public is None else public.mean(0).astype(np.float32)
    if reps is None or len(reps) < 2:
        return ReferenceStats(np.zeros(dim, np.float32), np.ones(dim, np.float32), pub_mean,
                              {"reference_texts": 0 if reps is None else len(reps)})
    sel = rng.integers(0, len(reps), size=(n_sim, k))
    lam = mixture_coefficients(rng, n_sim, k)
    mix = np.einsum("nk,nkd->nd", lam, reps[sel].astype(np.float64))
    bias = np.abs(np.sign(mix).mean(0))
    return ReferenceStats(mix.mean(0).astype(np.float32), bias.astype(np.float32), pub_mean,
                          {"reference_texts": int(len(reps)), "mean_sign_bias": float(bias.mean()),
                           "dims_bias_above_0.8": int((bias > 0.8).sum())})
