"""`hidebench attack gradient`: a federated client shares an update, a gradient-matching attack
(DLG, Inverting Gradients) inverts it, and the recovery is scored against the (encrypted) input
the client used and against its private images.

    hidebench attack gradient --defense instahide --k 4 --batch-size 1 --model lenet \\
        --attack inverting_gradients --data cifar10:test --out DIR

DIR/record.json (config, threat model, seed, versions, timings, metrics), DIR/grid.png
(private | encrypted input | recovered) and, under a defense, DIR/challenge/: the recovered
images as a challenge-format public view (with the client's key) for decoding attacks, e.g.
`hidebench attack carlini --challenge DIR/challenge`.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hidebench.types import HidebenchError

GRADIENT_ATTACKS = ("dlg", "inverting_gradients")


@dataclass
class GradientExperiment:
    """One federated client, one shared update, one attack. attack_options are passed to the
    attack's Config (e.g. {'tv': 1e-2}); iterations/restarts/optimizer None: the defaults."""

    data: str = "lfw"
    data_root: str | None = None
    model: str = "lenet"
    defense: str = "none"
    mode: str = "inside"
    k: int = 4
    batch_size: int = 1
    attack: str = "inverting_gradients"
    iterations: int | None = None
    restarts: int | None = None
    optimizer: str | None = None   # inverting_gradients: adam | lbfgs; None: lbfgs for lenet, else adam
    update: str = "gradient"
    local_steps: int = 1
    local_lr: float = 0.1
    bn_mode: str = "train"
    pretrain_steps: int = 0
    knows_labels: bool = False
    knows_batch_size: bool = True
    knows_bn_stats: bool = False
    knows_k: bool = True
    seed: int = 0
    device: str = "auto"
    attack_options: dict = field(default_factory=dict)

    def __post_init__(self):
        from attacks.base import get_attack
        from hidebench.federated import MODELS
        from hidebench.types import check_field_types

        check_field_types(self)
        if self.attack not in GRADIENT_ATTACKS:
            raise HidebenchError(f"unknown gradient attack {self.attack!r}; choose from {GRADIENT_ATTACKS}")
        if self.model not in MODELS:
            raise HidebenchError(f"unknown model {self.model!r}; choose from {MODELS}")
        if self.pretrain_steps < 0:
            raise HidebenchError(f"pretrain_steps must be >= 0, got {self.pretrain_steps!r}")
        for name in ("iterations", "restarts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise HidebenchError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise HidebenchError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.attack_options, dict):
            raise HidebenchError(f"attack options must be a KEY=VALUE table, got {self.attack_options!r}")
        cfg_cls = get_attack(self.attack).Config
        known = {f.name for f in dataclasses.fields(cfg_cls)}
        unknown = sorted(set(self.attack_options) - known)
        if unknown:
            raise HidebenchError(f"unknown {self.attack} option(s) {unknown}; valid: {sorted(known)}")
        check_field_types(cfg_cls, self.attack, self.attack_options)

    def client_config(self):
        from hidebench.federated import ClientConfig

        return ClientConfig(defense=self.defense, k=self.k, mode=self.mode, batch_size=self.batch_size,
                            update=self.update, local_steps=self.local_steps, local_lr=self.local_lr,
                            bn_mode=self.bn_mode)

    def attack_config(self) -> dict:
        cfg = dict(self.attack_options)
        if self.iterations is not None:
            cfg["iterations"] = self.iterations
        if self.restarts is not None:
            cfg["restarts"] = self.restarts
        if self.attack == "inverting_gradients":
            opt = self.optimizer or ("lbfgs" if self.model == "lenet" else "adam")
            cfg.setdefault("optimizer", opt)
            if cfg["optimizer"] == "lbfgs":
                cfg.setdefault("iterations", 300)
        elif self.optimizer not in (None, "lbfgs"):
            raise HidebenchError(f"dlg uses L-BFGS; optimizer={self.optimizer!r} applies to inverting_gradients only")
        return cfg


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HidebenchError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise HidebenchError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


def _public_patches(exp: GradientExperiment, rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Public patches for cross-dataset InstaHide: the embedded photos pool."""
    from hidebench.data import PoolConfig, build_pool

    pool = build_pool(PoolConfig(source="photos", region=96, screen=60, patch_mode="resize", min_keypoints=20), rng,
                      progress=False)
    return pool.patches(rng, n)[0]


def run_experiment(exp: GradientExperiment, *, progress: bool = True) -> tuple[dict, dict]:
    """Simulate the client, run the attack, score it. Returns (record, arrays) where arrays holds
    private, inputs, recovered (matched to input order), labels, soft_labels and the client's key."""
    from attacks.base import get_attack
    from attacks.gradient.common import GradientThreatModel
    from hidebench.challenge_io import library_versions
    from hidebench.data import load_source, source_size
    from hidebench.federated import client_update, make_batch, make_model, pretrain
    from hidebench.metrics import matched_set_metric, ssim

    device = resolve_device(exp.device)
    ccfg = exp.client_config()
    attack_cls = get_attack(exp.attack)
    threat = GradientThreatModel(knows_labels=exp.knows_labels, knows_batch_size=exp.knows_batch_size,
                                 knows_bn_stats=exp.knows_bn_stats,
                                 defense_k=exp.k if (exp.knows_k and exp.defense != "none") else None)
    attack = attack_cls(exp.attack_config(), threat)

    t0 = time.perf_counter()
    n_total = source_size(exp.data, data_root=exp.data_root)
    need = ccfg.n_private_needed
    if exp.batch_size > n_total:
        raise HidebenchError(f"batch size {exp.batch_size} is larger than the data source {exp.data!r} ({n_total} images)")
    if need > n_total:
        raise HidebenchError(f"{exp.defense} with k={exp.k} needs {need} private images; {exp.data!r} has {n_total}")
    rng = np.random.default_rng(exp.seed)
    n_pre = min(max(0, n_total - need), 512) if exp.pretrain_steps else 0
    idx = rng.choice(n_total, need + n_pre, replace=False)
    data = load_source(exp.data, data_root=exp.data_root, indices=np.sort(idx), progress=progress)
    order = np.argsort(np.argsort(idx))        # positions of idx within the sorted load
    images, labels = data.images[order], data.labels[order]
    n_classes = len(data.classes)
    patches = _public_patches(exp, rng) if exp.defense == "instahide" and exp.mode == "cross" else None

    model = make_model(exp.model, n_classes, seed=exp.seed).to(device)
    weights = pretrain(model, images[need:], labels[need:], steps=exp.pretrain_steps, seed=exp.seed, device=device)
    batch = make_batch(images[:need], labels[:need], n_classes, ccfg, seed=exp.seed, public_patches=patches)
    t1 = time.perf_counter()
    update = client_update(model, batch, ccfg, device=device)
    t2 = time.perf_counter()
    result = attack.run(update, model, n_classes=n_classes, true_labels=batch.soft_labels, seed=exp.seed,
                        device=device, progress=progress)
    t3 = time.perf_counter()

    rec = result.recovered
    vs_input = matched_set_metric(rec, batch.inputs)
    vs_private = matched_set_metric(rec, batch.private)
    # recovered image matched to each input row (input order), for the grid and chaining
    perm = np.empty(len(batch.inputs), dtype=np.int64)
    m = vs_input["match"]
    perm[m[:, 1]] = m[:, 0]
    rec_in_order = rec[perm] if len(rec) == len(batch.inputs) else rec
    rec_labels = result.labels[perm] if len(result.labels) == len(batch.inputs) else result.labels
    true_top = np.sort(batch.soft_labels.argmax(1))
    rec_top = np.sort(result.labels.argmax(1))
    overlap = sum(min(int((true_top == c).sum()), int((rec_top == c).sum())) for c in range(n_classes))
    metrics = {"vs_input": {k: vs_input[k] for k in ("ssim", "psnr", "mse")},
               "vs_private": {k: vs_private[k] for k in ("ssim", "psnr", "mse")},
               "per_image_ssim_vs_input": vs_input["per_image_ssim"].tolist(),
               "per_image_ssim_vs_private": vs_private["per_image_ssim"].tolist(),
               "label_accuracy": overlap / len(batch.soft_labels)}
    if batch.key is not None and len(rec_in_order) == len(batch.inputs):
        priv = batch.key.private[batch.key.private_of()]          # B x slots x H x W x C
        s_any = np.stack([ssim(rec_in_order, priv[:, j]) for j in range(priv.shape[1])], 1)
        metrics["vs_private_in_mix_max_ssim"] = float(s_any.max(1).mean())
    record = {
        "experiment": dataclasses.asdict(exp), "device": device, "client": ccfg.to_dict(),
        "threat_model": threat.to_dict(), "attack": {"name": exp.attack, "config": dataclasses.asdict(attack.config)},
        "model": {"name": exp.model, "n_classes": n_classes, **weights,
                  "n_parameters": int(sum(p.numel() for p in model.parameters()))},
        "data": {"source": exp.data, "fingerprint": data.fingerprint, "indices": idx[:need].tolist()},
        "attack_stats": result.stats, "metrics": metrics, "seed": exp.seed, "versions": library_versions(),
        "timings": {"setup_s": t1 - t0, "client_s": t2 - t1, "attack_s": t3 - t2,
                    "attack_per_image_s": (t3 - t2) / exp.batch_size, **{f"attack_{k}": v for k, v in result.timings.items()}},
    }
    arrays = {"private": batch.private, "inputs": batch.inputs, "recovered": rec_in_order, "labels": rec_labels,
              "soft_labels": batch.soft_labels, "key": batch.key, "class_names": data.classes}
    return record, arrays


def save_grid(path: Path, arrays: dict, title: str = "") -> None:
    """Rows: batch images; columns: private | encrypted input | recovered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("private", arrays["private"]), ("input (encrypted)", arrays["inputs"]), ("recovered", arrays["recovered"])]
    B = len(arrays["private"])
    fig, axes = plt.subplots(B, 3, figsize=(6, 2 * B + 0.4), squeeze=False)
    for i in range(B):
        for j, (name, imgs) in enumerate(cols):
            ax = axes[i, j]
            if i < len(imgs):
                ax.imshow(np.clip((imgs[i] + 1) / 2, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out: Path, record: dict, arrays: dict, exp: GradientExperiment) -> dict:
    """record.json, grid.png, recovered.npy and (under a defense) a challenge folder for chaining."""
    from hidebench.challenge_io import save_challenge, write_json
    from hidebench.types import PublicView

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "recovered.npy", arrays["recovered"].astype(np.float32))
    m = record["metrics"]
    save_grid(out / "grid.png", arrays, f"{exp.attack} | {exp.defense} k={exp.k} {exp.mode} | B={exp.batch_size} | "
                                        f"SSIM input {m['vs_input']['ssim']:.3f} private {m['vs_private']['ssim']:.3f}")
    files = {"record": "record.json", "grid": "grid.png", "recovered": "recovered.npy"}
    if exp.defense != "none" and arrays["key"] is not None and len(arrays["recovered"]) == len(arrays["inputs"]):
        view = PublicView(np.clip(arrays["recovered"], -1, 1), arrays["labels"], exp.k, exp.mode, exp.defense,
                          list(arrays["class_names"]), T=1)
        save_challenge(out / "challenge", view, arrays["key"],
                       {"origin": "recovered from a federated gradient by hidebench attack gradient",
                        "attack": exp.attack, "data": exp.data})
        files["challenge"] = "challenge"
        record["chaining"] = {"challenge": "challenge",
                              "note": "recovered encryptions in challenge format with the client's key; "
                                      "decode with e.g. `hidebench attack carlini --challenge DIR/challenge`"}
    record["files"] = files
    write_json(out / "record.json", record)
    return record


def _cmd_gradient(args) -> int:
    import json

    opts = {}
    for item in args.set or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise HidebenchError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            opts[key] = json.loads(val)
        except json.JSONDecodeError:
            opts[key] = val
    from hidebench.cli import _check_out_dir

    _check_out_dir(args.out)
    exp = GradientExperiment(data=args.data, data_root=args.data_root, model=args.model, defense=args.defense,
                             mode=args.mode, k=args.k, batch_size=args.batch_size, attack=args.attack,
                             iterations=args.iterations, restarts=args.restarts, optimizer=args.optimizer,
                             update=args.update, local_steps=args.local_steps, local_lr=args.local_lr,
                             bn_mode=args.bn_mode, pretrain_steps=args.pretrain_steps, knows_labels=args.knows_labels,
                             knows_batch_size=not args.unknown_batch_size, knows_bn_stats=args.knows_bn_stats,
                             knows_k=not args.unknown_k, seed=args.seed, device=args.device, attack_options=opts)
    record, arrays = run_experiment(exp, progress=not args.quiet)
    record = write_outputs(Path(args.out), record, arrays, exp)
    m = record["metrics"]
    print(f"{exp.attack} on {exp.model} | defense {exp.defense} (k={exp.k}, {exp.mode}) | batch {exp.batch_size} | "
          f"{record['attack_stats']['iterations']} iterations, {record['timings']['attack_per_image_s']:.1f} s/image")
    print(f"  vs encrypted input: SSIM {m['vs_input']['ssim']:.3f}  PSNR {m['vs_input']['psnr']:.2f} dB")
    print(f"  vs private images:  SSIM {m['vs_private']['ssim']:.3f}  PSNR {m['vs_private']['psnr']:.2f} dB")
    print(f"  label accuracy {m['label_accuracy']:.2f} ({record['attack_stats']['label_method']}); wrote {args.out}")
    return 0


# The choices of hidebench.federated (MODELS, DEFENSES, UPDATES, BN_MODES), spelled out here so
# that building the command line does not import torch (~2 s): every other command starts
# faster. federated's own checks still apply, and a test keeps the two in step.
MODELS = ("lenet", "convnet", "resnet18")
DEFENSES = ("none", "mixup", "instahide")
UPDATES = ("gradient", "fedavg")
BN_MODES = ("train", "eval")


def add_parser(attack_subparsers) -> argparse.ArgumentParser:
    """Add `gradient` to the `hidebench attack` sub-commands."""
    g = attack_subparsers.add_parser("gradient", help="gradient-matching attack (DLG, Inverting Gradients) on a "
                                                      "federated client, with or without Mixup/InstaHide")
    g.add_argument("--defense", choices=DEFENSES, default="none")
    g.add_argument("--mode", choices=("inside", "cross"), default="inside", help="InstaHide mixing (Mixup: inside)")
    g.add_argument("--k", type=int, default=4, help="images per mix (default 4)")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--model", choices=MODELS, default="lenet")
    g.add_argument("--attack", choices=GRADIENT_ATTACKS, default="inverting_gradients")
    g.add_argument("--data", default="lfw", help="private data source: lfw (embedded), cifar10:test, cifar10:train")
    g.add_argument("--data-root", help="data root (default $HIDEBENCH_DATA)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--iterations", type=int, help="optimiser steps (default: the attack's)")
    g.add_argument("--restarts", type=int, help="random restarts (default 1)")
    g.add_argument("--optimizer", choices=("adam", "lbfgs"),
                   help="inverting_gradients optimiser (default: lbfgs for lenet, adam otherwise)")
    g.add_argument("--update", choices=UPDATES, default="gradient", help="one gradient or a FedAvg update")
    g.add_argument("--local-steps", type=int, default=1, help="FedAvg local steps")
    g.add_argument("--local-lr", type=float, default=0.1, help="FedAvg local learning rate")
    g.add_argument("--bn-mode", choices=BN_MODES, default="train", help="BatchNorm mode of the client's forward pass")
    g.add_argument("--pretrain-steps", type=int, default=0, help="briefly train the shared model first (0: untrained)")
    g.add_argument("--knows-labels", action="store_true", help="threat model: the attacker is given the labels")
    g.add_argument("--unknown-batch-size", action="store_true", help="threat model: the batch size is not known")
    g.add_argument("--knows-bn-stats", action="store_true", help="threat model: BatchNorm batch statistics are known")
    g.add_argument("--unknown-k", action="store_true", help="threat model: the defense's k is not known")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="attack config value, e.g. tv=0.01 (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=_cmd_gradient)
    return g
