"""A learned inverter: which words a sentence representation holds (Song & Raghunathan, "Information
Leakage in Embedding Models", CCS 2020, inversion to a bag of words).

The attacker encodes its own sentences (threat.candidates) and trains an MLP from a
representation to the set of its words (the `vocab` most frequent tokens of those sentences,
multi-label, binary cross-entropy); the probability threshold is the one that maximises the
token F1 on a held-out tenth of them. Applied to the unmixing's recovered representations, it
names words without any candidate sentence having to match the private one, so its output is a
bag of words (listed by probability): exact match and BLEU are near 0 by construction, token F1
is its measure. The network goes to the model cache (hidebench.model_cache), keyed by the
encoder, the attacker's sentences, the config and the seed.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np

from hidebench.attacks.texthide.config import InvertConfig
from hidebench.text.metrics import tokens


def build_vocab(texts: list[str], size: int) -> list[str]:
    """The `size` tokens found in the most texts (ties: alphabetical)."""
    df = Counter(t for text in texts for t in set(tokens(text)))
    return [w for w, _ in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def multi_hot(texts: list[str], vocab: list[str]) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    y = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for r, text in enumerate(texts):
        for t in set(tokens(text)):
            if t in index:
                y[r, index[t]] = 1
    return y


def _net(dim: int, vocab: int, hidden: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, vocab))


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = (pred * y).sum(1)
    p, r = tp / np.maximum(pred.sum(1), 1), tp / np.maximum(y.sum(1), 1)
    return float(np.mean(np.where(tp > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)))


def bag_of_words_inverter(reps: np.ndarray, texts: list[str], cfg: InvertConfig, *, seed: int, spec: dict, ctx):
    """(predict(X) -> list of word strings, stats): trained or loaded from the model cache."""
    import torch

    vocab = build_vocab(texts, cfg.vocab)
    torch.manual_seed(seed)
    net = _net(reps.shape[1], len(vocab), cfg.hidden)
    cache = ctx.model_cache()
    spec = {**spec, "vocab": len(vocab), "config": cfg.to_dict(), "seed": seed}
    hit = cache.load("texthide_bow", spec)
    stats = {"vocab": len(vocab), "cached": hit is not None}
    if hit is not None:
        state, manifest = hit
        net.load_state_dict(state)
        threshold = float(manifest["threshold"])
        stats.update(threshold=threshold, heldout_token_f1=manifest.get("heldout_token_f1"))
    else:
        t0 = time.perf_counter()
        y = multi_hot(texts, vocab)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(reps))
        n_val = max(1, len(reps) // 10)
        val, tr = order[:n_val], order[n_val:]
        X, Y = torch.tensor(reps[tr], dtype=torch.float32), torch.tensor(y[tr])
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(X), generator=gen)
            for a in range(0, len(X), 128):
                idx = perm[a: a + 128]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(X[idx]), Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            pv = torch.sigmoid(net(torch.tensor(reps[val], dtype=torch.float32))).numpy()
        grid = np.linspace(0.05, 0.95, 19)
        scores = [_f1((pv >= t).astype(np.float32), y[val]) for t in grid]
        threshold = float(grid[int(np.argmax(scores))])
        stats.update(threshold=threshold, heldout_token_f1=float(max(scores)), train_s=time.perf_counter() - t0)
        cache.store("texthide_bow", spec, net.state_dict(), {"threshold": threshold,
                                                              "heldout_token_f1": float(max(scores)),
                                                              "train_s": stats["train_s"]})
    net.eval()

    def predict(x: np.ndarray) -> list[str]:
        with torch.no_grad():
            p = torch.sigmoid(net(torch.tensor(x, dtype=torch.float32))).numpy()
        out = []
        for row in p:
            keep = np.flatnonzero(row >= threshold)
            out.append(" ".join(vocab[i] for i in keep[np.argsort(-row[keep])]))
        return out

    return predict, stats
