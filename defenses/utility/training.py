"""Train a classifier on a defense's encryptions and measure what the defense costs in accuracy.

The InstaHide authors' recipe (Huang et al. 2020, `train_inside.py` / `train_cross.py`): fresh
encryptions every epoch, so after E epochs each training image has been encrypted T = E times,
soft-label cross-entropy against the mixed labels, test accuracy on clean test images and on
encrypted ones (predictions of K encryptions averaged). Vanilla training (scheme None) is the
reference. Deterministic for a seed: each epoch's shuffle, augmentation and encryptions come
from (seed, epoch), so a run resumed from its epoch checkpoint ends with the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hidebench.challenge_io import write_bytes
from hidebench.defenses.utility.batches import check_batching, encrypted_test_sets, one_epoch, prefetched
from hidebench.defenses.utility.config import UtilityConfig, effective_batch_size  # noqa: F401 (re-exported)
from hidebench.defenses.utility.fast import FastNet, Lookahead, patch_whitening, smooth_labels, tta_logits
from hidebench.defenses.utility.models import make_classifier
from hidebench.progress import bar
from hidebench.scheme import EncryptionConfig
from hidebench.types import HidebenchError, ImageSet

CHECKPOINT = "checkpoint.pt"
CURVES = ("train_loss", "train_accuracy", "test_accuracy_clean", "epoch_s")


@dataclass
class UtilityResult:
    model: torch.nn.Module
    test_accuracy_clean: float
    test_accuracy_encrypted: float | None
    curves: dict                      # per epoch: train_loss, train_accuracy, test_accuracy_clean, epoch_s
    timings: dict = field(default_factory=dict)
    resumed_from_epoch: int = 0
    batch_size: int = 0               # the batch size used (see effective_batch_size)
    config: UtilityConfig | None = None   # the config used, every "auto" resolved


def _nchw(x: np.ndarray, device) -> torch.Tensor:
    """HWC numpy images -> an N x C x H x W tensor in channels-last memory (no copy on the host)."""
    return torch.as_tensor(np.ascontiguousarray(x), device=device).permute(0, 3, 1, 2)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _lr(cfg: UtilityConfig, step: int, steps_per_epoch: int) -> float:
    """cfg.schedule at `step` (cfg resolved): cosine, linear warm-up over warmup_epochs then a
    cosine decay to zero at the last step; triangle (airbench), 0.2 -> 1 over warmup_epochs then
    linearly down to 0.07 at the last step; step (the InstaHide authors'), lr / 10 at half and
    again at three quarters of the steps, after the same linear warm-up as cosine."""
    total, warm = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    if cfg.schedule == "triangle":
        if step < warm:
            return cfg.lr * (0.2 + 0.8 * step / warm)
        return cfg.lr * (1 - 0.93 * (step - warm) / max(total - warm, 1))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** ((step >= total / 2) + (step >= 3 * total / 4))
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, device, batch: int, tta: int = 0,
            precision: str = "fp32") -> np.ndarray:
    """Softmax probabilities, N x n_classes (of the logits averaged over `tta` views)."""
    model.eval()
    device = torch.device(device)
    out = []
    for a in range(0, len(images), batch):
        with _autocast(device, precision):
            logits = tta_logits(model, _nchw(images[a: a + batch], device), tta)
        out.append(F.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def clean_accuracy(model, test: ImageSet, device, batch: int, tta: int = 0, precision: str = "fp32") -> float:
    return float(np.mean(predict(model, test.images, device, batch, tta, precision).argmax(1) == test.labels))


def encrypted_accuracy(model, test: ImageSet, scheme: EncryptionConfig, patches, cfg: UtilityConfig, device,
                       rng: np.random.Generator) -> float:
    """Accuracy when each test image is classified from K encryptions of it (mean softmax)."""
    n_classes = len(test.classes)
    votes = np.zeros((len(test), n_classes))
    for idx, enc, owner in encrypted_test_sets(test.images, test.labels, n_classes, scheme, patches, cfg.K,
                                               cfg.eval_batch, rng):
        np.add.at(votes, idx[owner], predict(model, enc, device, cfg.eval_batch, cfg.tta, cfg.precision))
    return float(np.mean(votes.argmax(1) == test.labels))


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, digest: str) -> dict | None:
    if not path.is_file():
        return None
    try:    # weights_only: tensors, numbers, strings and containers, never an unpickled object
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:              # truncated, foreign or a planted pickle: say so, never run it
        why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise HidebenchError(f"{path} is not a readable utility checkpoint ({why}); "
                             "delete it to train from the start") from None
    if not isinstance(state, dict) or state.get("digest") != digest:
        raise HidebenchError(f"{path} is the checkpoint of other settings (model, scheme, data or seed); "
                             "use another --out, or delete it to train anew")
    return state


def _whitening_inputs(train: ImageSet, scheme: EncryptionConfig | None, patches, batch_size: int, n: int,
                      rng: np.random.Generator) -> np.ndarray:
    """n inputs of the kind the model trains on, without augmentation: training images for
    vanilla training, encryptions of them (fresh ones, drawn like an epoch's) otherwise. Under
    InstaHide the random sign masks leave neighbouring pixels uncorrelated, so the whitening the
    network gets is (nearly) a per-position rescaling; whitening clean images instead would
    decorrelate correlations the encryptions do not have."""
    out, got = [], 0
    for b in one_epoch(train.images, train.labels, len(train.classes), scheme, patches, batch_size, rng, augment=False):
        out.append(b.images)
        got += len(b.images)
        if got >= n:
            break
    return np.concatenate(out)[:n]


def _optimizer(model: torch.nn.Module, cfg: UtilityConfig) -> torch.optim.Optimizer:
    """Nesterov SGD; for the fast net a second group for the BatchNorm shifts, its learning rate
    bias_lr_scale times larger and its weight decay as many times smaller (the same decay per
    step). Each group's lr_scale multiplies the scheduled learning rate."""
    special = model.norm_biases() if isinstance(model, FastNet) else []
    ids = {id(p) for p in special}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in ids], "lr_scale": 1.0,
               "weight_decay": cfg.weight_decay}]
    if special:
        groups.append({"params": special, "lr_scale": cfg.bias_lr_scale, "weight_decay": cfg.weight_decay / cfg.bias_lr_scale})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def train_classifier(train: ImageSet, test: ImageSet, scheme: EncryptionConfig | None, cfg: UtilityConfig, *,
                     patch_bank: Callable[[np.random.Generator, int], np.ndarray] | None = None, seed: int = 0,
                     device=None, checkpoint_dir=None, settings: dict | None = None, progress: bool = True,
                     on_epoch: Callable[[int, dict], None] | None = None) -> UtilityResult:
    """Train cfg.model on `train` encrypted with `scheme` (None: vanilla) and test it.

    patch_bank(rng, n): n public patches, drawn afresh every epoch (cross-dataset schemes).
    checkpoint_dir: where CHECKPOINT is written after every epoch and resumed from (its
    `settings`, which must describe everything the weights depend on, must match).
    on_epoch(epoch, curves): called after each epoch's checkpoint (tests interrupt there).
    The per-epoch test_accuracy_clean curve is the plain model's; the returned accuracies use
    cfg.tta test-time views."""
    cfg = cfg.resolved(len(train))
    device = torch.device(device or "cpu")
    n_classes = len(train.classes)
    if len(test.classes) != n_classes or test.images.shape[1:] != train.images.shape[1:]:
        raise HidebenchError(f"train and test sets differ: {n_classes} vs {len(test.classes)} classes, "
                             f"images {train.images.shape[1:]} vs {test.images.shape[1:]}")
    batch_size = cfg.batch_size
    check_batching(scheme, batch_size, len(train))
    cross = scheme is not None and scheme.k > scheme.n_private_slots
    if cross and patch_bank is None:
        raise HidebenchError("cross-dataset training needs public patches (a pool)")
    steps_per_epoch = len(train) // batch_size
    torch.manual_seed(seed)
    model = make_classifier(cfg.model, n_classes, cfg.width, cfg.widths, train.images.shape[-1])
    if isinstance(model, FastNet):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
        patches = patch_bank(rng, min(len(train), 10000)) if cross else None
        sample = _whitening_inputs(train, scheme, patches, batch_size, min(cfg.whiten_images, len(train)), rng)
        model.set_whitening(patch_whitening(_nchw(sample, "cpu")))
    model = model.to(device, memory_format=torch.channels_last)
    opt = _optimizer(model, cfg)
    lookahead = Lookahead(model, cfg.epochs * steps_per_epoch) if cfg.lookahead else None
    flip_base = np.random.default_rng(np.random.SeedSequence([seed, 5])).integers(0, 2, len(train))
    curves = {k: [] for k in CURVES}
    digest = settings_digest({"settings": settings or {}, "config": cfg.to_dict(), "seed": seed})
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    start = 0
    state = _load_checkpoint(ckpt, digest) if ckpt is not None else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if lookahead is not None:
                lookahead.load_state_dict(state["lookahead"])
            curves, start = state["curves"], state["epoch"]
            if not (isinstance(start, int) and 0 <= start <= cfg.epochs and isinstance(curves, dict)
                    and all(isinstance(curves.get(k), list) and len(curves[k]) == start for k in CURVES)):
                raise ValueError("epoch and curves do not agree")
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            why = " ".join(str(e).split())[:200]
            raise HidebenchError(f"{ckpt} is not a valid checkpoint of these settings ({why}); delete it to train "
                                 "from the start") from None

    t0 = time.perf_counter()
    pbar = bar(total=cfg.epochs * steps_per_epoch, initial=start * steps_per_epoch, enabled=progress,
               desc=f"train {cfg.model}", unit="batch")
    for epoch in range(start, cfg.epochs):
        te = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, epoch]))
        patches = patch_bank(rng, min(len(train), 10000)) if cross else None
        flips = flip_base ^ (epoch & 1) if cfg.flip == "alternate" else None
        if isinstance(model, FastNet):
            model.whiten.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
        model.train()
        loss_sum, hits, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0   # on the device: no sync a step
        batches = one_epoch(train.images, train.labels, n_classes, scheme, patches, batch_size, rng, cfg.augment,
                            cfg.translate, flips)
        for i, b in enumerate(prefetched(batches)):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, steps_per_epoch) * g["lr_scale"]
            target = torch.as_tensor(b.targets, device=device)
            with _autocast(device, cfg.precision):
                out = model(_nchw(b.images, device)).float()
            loss = -(smooth_labels(target, cfg.label_smoothing) * F.log_softmax(out, dim=1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if lookahead is not None:
                lookahead.step(step + 1)
            loss_sum += loss.detach() * len(target)
            hits += (out.argmax(1) == target.argmax(1)).sum()
            seen += len(target)
            pbar.update(1)
            if i % 20 == 0 and not pbar.disable:
                pbar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum.item() / seen:.3f} "
                                     f"acc {hits.item() / seen:.3f}")
        loss_sum, hits = loss_sum.item(), hits.item()
        if lookahead is not None and epoch + 1 == cfg.epochs:
            lookahead.finish()
        acc = clean_accuracy(model, test, device, cfg.eval_batch, 0, cfg.precision)
        for k, v in zip(curves, (loss_sum / seen, hits / seen, acc, time.perf_counter() - te)):
            curves[k].append(round(float(v), 6))
        pbar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} test {acc:.3f}")
        if ckpt is not None:
            _save_checkpoint(ckpt, {"digest": digest, "epoch": epoch + 1, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(), "curves": curves,
                                    "lookahead": lookahead.state_dict() if lookahead is not None else {}})
        if on_epoch is not None:
            on_epoch(epoch + 1, curves)
    pbar.close()
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    clean = clean_accuracy(model, test, device, cfg.eval_batch, cfg.tta, cfg.precision)
    encrypted = None
    if scheme is not None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        patches = patch_bank(rng, min(len(test) * cfg.K, 10000)) if cross else None
        encrypted = encrypted_accuracy(model, test, scheme, patches, cfg, device, rng)
    return UtilityResult(model, clean, encrypted, curves,
                         {"train_s": train_s, "evaluate_s": time.perf_counter() - t1,
                          "train_epochs_s": float(sum(curves["epoch_s"]))}, resumed_from_epoch=start,
                         batch_size=batch_size, config=cfg)
