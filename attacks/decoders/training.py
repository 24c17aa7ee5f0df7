"""Training of the learned decoders, through the model cache.

`cached_model` loads a network trained earlier under the same spec (scheme, aux, pool, config,
seed) or trains it and stores it. `train_decomposer` and `train_demasker` are the two training
loops: Adam on fresh MixSampler batches with a cosine learning-rate schedule (`cosine_schedule`),
one curve point (mean loss) per `epoch_steps` steps, a progress bar with the current loss
(`train_loop`; `train_adam` the single-network Adam loop, which fdn's fusion network trains
with too).
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pytorch_msssim import ssim as differentiable_ssim
from torch import nn

from hidebench.attacks.decoders.config import DeepDecomposeConfig, GanDemaskConfig, TrainConfig
from hidebench.attacks.decoders.mixes import MixSampler
from hidebench.progress import bar


@dataclass
class Trained:
    """A network ready for inference: its training curves and seconds (from the cache entry
    when `cached`), and the cache entry's id."""

    net: nn.Module
    curves: dict = field(default_factory=dict)
    train_s: float = 0.0
    cached: bool = False
    entry: str | None = None


def cached_model(name: str, spec: dict, make_net: Callable[[], nn.Module], train: Callable[[nn.Module], dict], ctx,
                 device, *, seed: int) -> Trained:
    """The network of `spec` from ctx's model cache, or made (weights drawn from `seed`),
    trained by `train(net) -> curves` and stored. A cache entry that no longer fits the network
    is retrained."""
    from hidebench.model_cache import entry_name

    def fresh():
        torch.manual_seed(seed)
        return make_net()

    cache = ctx.model_cache()
    net = fresh()
    hit = cache.load(name, spec)
    if hit is not None:
        state, manifest = hit
        try:
            net.load_state_dict(state)
            return Trained(net.to(device).eval(), manifest.get("curves", {}), manifest.get("train_s", 0.0), True,
                           entry_name(name, spec))
        except (RuntimeError, KeyError, TypeError) as e:
            cache.log(f"hidebench: cached model {entry_name(name, spec)} does not fit the network ({e}); retraining")
            net = fresh()
    net = net.to(device)
    t0 = time.perf_counter()
    curves = train(net)
    train_s = time.perf_counter() - t0
    net.eval()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    d = cache.store(name, spec, state, {"train_s": train_s, "curves": curves, "device": str(device)})
    return Trained(net, curves, train_s, False, d.name if d is not None else None)


def decoder_input(encryption: torch.Tensor, scheme: str) -> torch.Tensor:
    """What the decoders see: |e| for InstaHide (the mask makes the sign carry nothing), e for
    Mixup (a tensor or an array)."""
    return abs(encryption) if scheme == "instahide" else encryption


def cosine_schedule(opt, cfg: TrainConfig):
    """Cosine decay of the learning rate to 0 over cfg.steps (any config with `steps`)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))


def train_adam(net: nn.Module, cfg: TrainConfig, batch_loss: Callable[[], tuple], *, seed: int, desc: str,
               progress: bool) -> dict:
    """Adam at cfg.lr with the cosine schedule: each step batch_loss() -> (loss, values to curve),
    then one optimiser and schedule step, through train_loop (the decomposer and fdn's fusion
    network train so)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = cosine_schedule(opt, cfg)
    net.train()

    def step():
        loss, values = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return values

    return train_loop(cfg, step, desc, progress)


def train_loop(cfg: TrainConfig, step: Callable[[], dict], desc: str, progress: bool) -> dict:
    """Run `step` cfg.steps times; curves: the mean of each returned value per epoch of
    cfg.epoch_steps steps (any config with `steps` and `epoch_steps`)."""
    curves: dict[str, list] = {}
    acc: dict[str, float] = {}
    pbar = bar(total=cfg.steps, desc=desc, enabled=progress)
    try:
        for i in range(cfg.steps):
            values = step()
            for k, v in values.items():
                acc[k] = acc.get(k, 0.0) + v
            last = (i + 1) % cfg.epoch_steps == 0 or i + 1 == cfg.steps
            if last:
                n = (i % cfg.epoch_steps) + 1
                for k, v in acc.items():
                    curves.setdefault(k, []).append(round(v / n, 5))
                acc = {}
                pbar.set_postfix({k: f"{v[-1]:.4f}" for k, v in curves.items()})
            pbar.update(1)
    finally:
        pbar.close()
    return curves


def decompose_loss(out: torch.Tensor, target: torch.Tensor, ssim_weight: float, order: str = "heaviest") -> torch.Tensor:
    """L1 + ssim_weight (1 - SSIM) between B x n x C x H x W outputs and targets in [-1, 1].

    order 'heaviest': output j against the j-th heaviest private image; 'free': against the
    targets in whichever order fits each example best (permutation-invariant training, Yu et
    al., ICASSP 2017), so an example whose heavier image is ambiguous need not be blurred."""
    B, n = out.shape[:2]

    def per_image(a, b):          # B x n x C x H x W -> B x n
        loss = (a - b).abs().flatten(2).mean(2)
        if ssim_weight:
            s = differentiable_ssim((a.flatten(0, 1) + 1) / 2, (b.flatten(0, 1) + 1) / 2, data_range=1.0,
                                    size_average=False)
            loss = loss + ssim_weight * (1 - s.view(B, n))
        return loss

    if order == "heaviest" or n == 1:
        return per_image(out, target).mean()
    perms = list(itertools.permutations(range(n)))
    losses = torch.stack([per_image(out, target[:, list(p)]).mean(1) for p in perms], 1)     # B x perms
    return losses.min(1).values.mean()


def train_decomposer(net: nn.Module, sampler: MixSampler, cfg: DeepDecomposeConfig, *, seed: int,
                     progress: bool, desc: str = "deep_decompose training") -> dict:
    t = cfg.training

    def batch_loss():
        b = sampler.draw(t.batch_size)
        out = net(decoder_input(b.encryption, sampler.scheme.scheme), b.label_row)
        out = out.view(len(out), cfg.n_out, -1, *out.shape[2:])
        loss = decompose_loss(out, b.private[:, : cfg.n_out], cfg.ssim_weight, cfg.order)
        return loss, {"loss": float(loss.detach())}

    return train_adam(net, t, batch_loss, seed=seed, desc=desc, progress=progress)


def train_demasker(gen: nn.Module, disc: nn.Module, sampler: MixSampler, cfg: GanDemaskConfig, *, seed: int,
                   progress: bool) -> dict:
    """pix2pix: the generator maps |e| (with the label row) to the signed mixture; the
    discriminator tells (|e|, true mixture) from (|e|, generated mixture) patch by patch."""
    torch.manual_seed(seed)
    t = cfg.training
    og = torch.optim.Adam(gen.parameters(), lr=t.lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(disc.parameters(), lr=t.lr, betas=(0.5, 0.999))
    sg, sd = cosine_schedule(og, t), cosine_schedule(od, t)
    bce = nn.BCEWithLogitsLoss()
    gen.train()
    disc.train()

    def step():
        b = sampler.draw(t.batch_size)
        x = b.encryption.abs()
        fake = gen(x, b.label_row)
        real_logits, fake_logits = disc(x, b.mixture), disc(x, fake.detach())
        d_loss = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
        od.zero_grad(set_to_none=True)
        d_loss.backward()
        od.step()
        adv = disc(x, fake)
        l1 = (fake - b.mixture).abs().mean()
        g_loss = bce(adv, torch.ones_like(adv)) + cfg.l1_weight * l1
        og.zero_grad(set_to_none=True)
        g_loss.backward()
        og.step()
        sg.step()
        sd.step()
        return {"l1": float(l1.detach()), "g_adv": float((g_loss - cfg.l1_weight * l1).detach()), "d": float(d_loss.detach())}

    return train_loop(t, step, "gan_demask training", progress)


@torch.no_grad()
def predict(net: nn.Module, inputs, label_rows, *, batch: int, device, desc: str, progress: bool):
    """net over E x H x W x C numpy inputs in batches -> E x (out channels) x H x W numpy."""
    import numpy as np

    net.eval()
    out = []
    pbar = bar(total=len(inputs), desc=desc, enabled=progress)
    try:
        for a in range(0, len(inputs), batch):
            x = torch.as_tensor(inputs[a: a + batch], device=device).permute(0, 3, 1, 2)
            c = torch.as_tensor(label_rows[a: a + batch], device=device)
            out.append(net(x, c).cpu().numpy())
            pbar.update(len(x))
    finally:
        pbar.close()
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
