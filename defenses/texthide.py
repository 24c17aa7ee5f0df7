"""TextHide encryption of sentence representations (Huang, Song, Chen, Li, Arora, "TextHide:
Tackling Data Privacy in Language Understanding Tasks", Findings of EMNLP 2020).

As the authors' reference code does it (github.com/Hazelsuko07/TextHide, instahide.py and
modeling_bert.py): every representation is mixed with k - 1 others, coefficients |g| / sum|g| for
g ~ N(0, I_k) (InstaHide's `sample_lambdas`, whose c1 = 1 rejects nothing), then multiplied
elementwise by one of m random sign vectors (the mask pool, drawn once and kept secret), picked
uniformly per encryption; labels are mixed with the same coefficients. Inside ('intra') every
partner is private; inter takes floor(k / 2) partners from a public corpus (the code's odd-numbered
partners) and the label keeps only the private coefficients.

Two departures, both stated in the release: the code draws partners from a training batch of 32
(by permutation, repeats allowed), here they are distinct and drawn from the whole private set (as
InstaHide's challenge does), and the release is one fixed set of encryptions of frozen
representations, T per private sentence, where the code encrypts afresh every epoch while it
fine-tunes the encoder.
"""
from __future__ import annotations

import numpy as np

from hidebench.defenses.instahide import distinct_others, mix_rows, sample_lambdas
from hidebench.text.scheme import TextHideConfig
from hidebench.text.types import TextKey, TextView, check_vectors
from hidebench.types import HidebenchError


def mask_pool(rng: np.random.Generator, m: int, dim: int) -> np.ndarray:
    """m x dim random signs (int8, +-1): the key's mask pool."""
    pool = rng.integers(0, 2, size=(m, dim), dtype=np.int8)
    pool *= 2
    pool -= 1
    return pool


def encrypt_text(private: np.ndarray, private_labels: np.ndarray, n_classes: int, cfg: TextHideConfig,
                 seed: int | np.random.SeedSequence | None = None, public: np.ndarray | None = None, *,
                 sentences: list[str] | None = None, class_names: list[str] | None = None,
                 encoder: dict | None = None) -> tuple[TextView, TextKey]:
    """Encrypt every private representation T times (module docstring); the shuffled public view
    and the key. public: P x d representations of the public corpus (inter only)."""
    x = np.asarray(check_vectors("private representations", private), dtype=np.float32)
    y = np.asarray(private_labels, dtype=np.int64)
    n, d = x.shape
    if y.shape != (n,):
        raise HidebenchError(f"{n} private representations but private labels of shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise HidebenchError(f"private labels must lie in 0..{n_classes - 1}")
    slots = cfg.n_private_slots
    if n < slots:
        raise HidebenchError(f"k={cfg.k} {cfg.mode} TextHide needs at least {slots} distinct private sentences, got {n}")
    n_public = cfg.k - slots
    if n_public:
        if public is None or not len(public):
            raise HidebenchError("TextHide-inter needs the representations of a public corpus")
        pub = np.asarray(check_vectors("public representations", public, dim=d), dtype=np.float32)

    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    r_lam, r_sel, r_pub, r_pool, r_idx, r_order = (np.random.default_rng(s) for s in ss.spawn(6))
    E = n * cfg.T
    lam = sample_lambdas(r_lam, E, cfg).astype(np.float32)
    first = np.repeat(np.arange(n), cfg.T)
    sel = np.concatenate([first[:, None], distinct_others(r_sel, first, n, slots - 1)], axis=1)
    if n_public:
        sel = np.concatenate([sel, r_pub.integers(0, len(pub), size=(E, n_public))], axis=1)
    pool = mask_pool(r_pool, cfg.m, d)
    index = r_idx.integers(0, cfg.m, size=E)
    order = r_order.permutation(E)
    sel, lam = sel[order], lam[order]
    enc = mix_rows(x, pub if n_public else None, sel, lam, slots, pool[index], scheme_has_mask=True)

    labels = np.zeros((E, n_classes), dtype=np.float32)
    np.add.at(labels, (np.arange(E)[:, None], y[sel[:, :slots]]), lam[:, :slots])
    view = TextView(enc, labels, cfg.k, cfg.m, mode=cfg.mode, T=cfg.T,
                    class_names=list(class_names) if class_names else [str(i) for i in range(n_classes)],
                    encoder=dict(encoder or {}))
    key = TextKey(private=x, private_labels=y, sentences=list(sentences) if sentences is not None else [""] * n,
                  selection=sel, lambdas=lam, mask_pool=pool, mask_index=index, seed=int(ss.entropy),
                  n_private_slots=slots)
    return view, key
