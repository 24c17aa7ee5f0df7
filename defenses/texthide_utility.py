"""What TextHide costs in accuracy: a classifier trained on TextHide mixtures the authors' way.

As the reference code trains (github.com/Hazelsuko07/TextHide, modeling_bert.py, run_glue.py):
every batch of B sentence representations is mixed with k - 1 random permutations of itself,
coefficients |g| / sum|g|, labels mixed as one-hot vectors with the same coefficients, each mixture
multiplied by a mask drawn uniformly from a pool of m sign vectors fixed for the run; the head is
the code's BertClassificationHead (dropout, then one Linear(d, d) + tanh applied `layers` times,
then a linear output layer; 3 times in the code, 2 with --small_cls), trained with soft-label
cross-entropy. At inference no sentence is mixed but each is still masked by a random mask of the
pool (the code sets k = 1 and keeps the mask); `K` > 1 averages the predictions of K masks.
Inter: the odd-numbered partners come from a public corpus and carry the label of the private
sentence at the same position of the permuted batch (the code's `label[index]`).

The code fine-tunes the whole encoder (BERT-base) end to end through the mixing, and what it mixes
is BERT's pooler output tanh(W h_[CLS]). Here the encoder is frozen (its representations are
computed once, hidebench.text.encoder); with `pooler` (the default) a trainable Linear(d, d) + tanh
sits between it and the mixing and is trained through the mixing and the masks, as the code's
pooler is, so the representation can adapt to the masks; without it only the head is trained, on
the fixed representations (the vanilla run gets the same layer, so the two compare like with like).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hidebench.config import Config, check_bool, check_float, check_int
from hidebench.text.scheme import TextHideConfig
from hidebench.types import HidebenchError


@dataclass
class TextUtilityConfig(Config):
    """train / test: text sources (default: the recipe's corpus' odd and even halves for Rotten
    Tomatoes, see hidebench.app.text_utility); the head and its training (module docstring):
    epochs (the code's SST-2 run takes 20 epochs of 67k sentences, about 42k steps of 32; the
    default 60 epochs of Rotten Tomatoes' 4,265 training sentences make 8k), batch_size (the
    code's 32), lr (Adam), weight_decay, dropout (SST-2's 0.4 in the code's run_intra.sh), layers;
    K masks averaged per test sentence; pooler: a trainable pooler layer before the mixing."""

    section = "utility"
    train: str | None = None
    test: str | None = None
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.4
    layers: int = 2
    K: int = 1
    pooler: bool = True

    def validate(self):
        s = self.section
        self.epochs = check_int(self.epochs, f"{s}.epochs", min=1, max=100000)
        self.batch_size = check_int(self.batch_size, f"{s}.batch_size", min=2, max=1 << 20)
        self.layers = check_int(self.layers, f"{s}.layers", min=0, max=16)
        self.K = check_int(self.K, f"{s}.K", min=1, max=1000)
        check_float(self.lr, f"{s}.lr", min=0, min_open=True, max=10)
        check_float(self.weight_decay, f"{s}.weight_decay", min=0)
        check_float(self.dropout, f"{s}.dropout", min=0, max=1, max_open=True)
        check_bool(self.pooler, f"{s}.pooler")
        for name in ("train", "test"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise HidebenchError(f"{s}.{name} must be a text source spec, got {v!r}")


@dataclass
class TextUtilityResult:
    test_accuracy_clean: float | None
    test_accuracy_encrypted: float | None
    curves: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def build_head(dim: int, n_classes: int, cfg: TextUtilityConfig):
    """The reference code's classification head (module docstring)."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(cfg.dropout)
            self.dense = torch.nn.Linear(dim, dim)
            self.out = torch.nn.Linear(dim, n_classes)

        def forward(self, x):
            x = self.drop(x)
            for _ in range(cfg.layers):
                x = self.drop(torch.tanh(self.dense(x)))
            return self.out(x)

    return Head()


def build_pooler(dim: int, cfg: TextUtilityConfig):
    """The trainable layer before the mixing (tanh(W x + b)), or the identity."""
    import torch

    if not cfg.pooler:
        return torch.nn.Identity()
    return torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Tanh())


def _coefficients(gen, rows: int, k: int):
    import torch

    lam = torch.randn(rows, k, generator=gen).abs()
    return lam / lam.sum(1, keepdim=True)


def train_text_classifier(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          n_classes: int, scheme: TextHideConfig | None, cfg: TextUtilityConfig, *, seed: int = 0,
                          public_x: np.ndarray | None = None, device=None, progress: bool = False) -> TextUtilityResult:
    """Train the head on TextHide mixtures (scheme None: on the clean representations) and test it."""
    import torch
    import torch.nn.functional as F

    from hidebench.progress import bar

    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d = train_x.shape[1]
    X = torch.tensor(train_x, dtype=torch.float32)
    Y = F.one_hot(torch.tensor(train_y, dtype=torch.int64), n_classes).float()
    P = torch.tensor(public_x, dtype=torch.float32) if public_x is not None else None
    pool = None
    if scheme is not None:
        pool = torch.randint(0, 2, (scheme.m, d), generator=gen).float() * 2 - 1
        if scheme.k > scheme.n_private_slots and P is None:
            raise HidebenchError("TextHide-inter training needs the public corpus' representations")
    model = build_head(d, n_classes, cfg).to(device)
    pooler = build_pooler(d, cfg).to(device)
    params = [*model.parameters(), *pooler.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    curves = {"train_loss": []}
    t0 = time.perf_counter()
    for _ in bar(range(cfg.epochs), enabled=progress, desc="training the head", leave=False):
        order = torch.randperm(len(X), generator=gen)
        model.train()
        pooler.train()
        total, count = 0.0, 0
        for a in range(0, len(X), cfg.batch_size):
            idx = order[a: a + cfg.batch_size]
            x, y = pooler(X[idx].to(device)), Y[idx].to(device)
            if scheme is not None:
                B = len(idx)
                lam = _coefficients(gen, B, scheme.k).to(device)
                mix, lab = lam[:, :1] * x, lam[:, :1] * y
                for j in range(1, scheme.k):
                    perm = torch.randperm(B, generator=gen)
                    if j % 2 == 1 and scheme.mode == "inter":
                        part = pooler(P[torch.randint(0, len(P), (B,), generator=gen)].to(device))
                    else:
                        part = x[perm]
                    mix = mix + lam[:, j: j + 1] * part
                    lab = lab + lam[:, j: j + 1] * y[perm]
                x, y = mix * pool[torch.randint(0, scheme.m, (B,), generator=gen)].to(device), lab
            loss = -(y * F.log_softmax(model(x), dim=1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        curves["train_loss"].append(total / count)
    train_s = time.perf_counter() - t0

    model.eval()
    pooler.eval()
    yt = torch.tensor(test_y, dtype=torch.int64)
    with torch.no_grad():
        Xt = pooler(torch.tensor(test_x, dtype=torch.float32).to(device)).cpu()

    def accuracy(masked: bool) -> float:
        probs = torch.zeros(len(Xt), n_classes)
        with torch.no_grad():
            for _ in range(cfg.K if masked else 1):
                x = Xt * pool[torch.randint(0, scheme.m, (len(Xt),), generator=gen)] if masked else Xt
                probs += F.softmax(model(x.to(device)), dim=1).cpu()
        return float((probs.argmax(1) == yt).float().mean())

    clean = accuracy(False)
    enc = accuracy(True) if scheme is not None else None
    return TextUtilityResult(test_accuracy_clean=clean, test_accuracy_encrypted=enc, curves=curves,
                             timings={"train_s": train_s, "test_s": time.perf_counter() - t0 - train_s})
