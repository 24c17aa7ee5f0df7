"""The GAN-demasking attack: InstaHide -> Mixup -> the private images.

Huang et al. (ICML 2020, Sec. 5) evaluate a GAN-based demasking attack suggested by Florian
Tramer; hidebench's version: a pix2pix conditional GAN (Isola et al., CVPR 2017: U-Net
generator, PatchGAN discriminator on (input, output) pairs, adversarial + L1 loss) from
|encryption| and its label row to the signed mixture sum_i lambda_i x_i, then the deep-decompose
network trained on Mixup with the same k and mode splits the demasked mixture into private
images. Both are trained on the attacker's own encryptions and cached.
"""
from __future__ import annotations

import time

import numpy as np

from hidebench.attacks.base import ReleaseAttack, ReleaseResult, register
from hidebench.attacks.decoders.config import GanDemaskConfig
from hidebench.attacks.decoders.deep_decompose import model_stats, output_ssim
from hidebench.types import HidebenchError

# |mixture| below this is too faint for its sign to count in the sign accuracy
SIGN_FLOOR = 0.05


@register
class GanDemask(ReleaseAttack):
    """GAN demasking (Tramer, in Huang et al. 2020): pix2pix |e| -> mixture, then deep decompose."""

    name = "gan_demask"
    Config = GanDemaskConfig
    uses_oracles = ("pairs",)
    uses_models = True

    def run(self, view, oracle, ctx):
        from hidebench.attacks.decoders.decomposition import AttackerData, decompose, decomposer, recovered_set
        from hidebench.attacks.decoders.mixes import MixSampler, scheme_of
        from hidebench.attacks.decoders.nets import PatchDiscriminator, UNet
        from hidebench.attacks.decoders.training import cached_model, predict, train_demasker
        from hidebench.pipeline import stage_seed

        if view.scheme != "instahide":
            raise HidebenchError("gan_demask removes InstaHide's sign mask; this release is Mixup "
                                 "(attack it with deep_decompose)")
        cfg, device = self.config, ctx.torch_device()
        data = AttackerData(view, self.threat, ctx, max(cfg.training.aux_max, cfg.decompose.training.aux_max), self.name)
        sch, n_classes, C = scheme_of(view), view.labels.shape[1], view.encryptions.shape[-1]
        seed = stage_seed(ctx.seed, "gan_demask")
        spec = {"scheme": {k: v for k, v in sch.to_dict().items() if k != "T"}, "n_classes": n_classes, **data.spec(),
                "config": cfg.model_dict(), "seed": seed}

        def make():
            return UNet(C, C, n_classes, width=cfg.generator.width, depth=cfg.generator.depth)

        def train(gen):
            disc = PatchDiscriminator(2 * C, width=cfg.discriminator.width).to(device)
            sampler = MixSampler(data.aux, n_classes, sch, data.patches(cfg.training.patches, seed)
                                 if sch.k > sch.n_private_slots else None, seed=seed, device=device)
            return train_demasker(gen, disc, sampler, cfg, seed=seed, progress=ctx.progress)

        gen = cached_model("gan_demask", spec, make, train, ctx, device, seed=seed)
        dec = decomposer(view, "mixup", data, cfg.decompose, ctx, device, seed=stage_seed(ctx.seed, "deep_decompose"))
        t0 = time.perf_counter()
        absolute = np.abs(view.encryptions)
        mixture = predict(gen.net, absolute, view.labels, batch=cfg.decompose.inference_batch, device=device,
                          desc="gan_demask inference", progress=ctx.progress).transpose(0, 2, 3, 1).clip(-1, 1)
        preds = decompose(dec, mixture, view.labels, cfg.decompose, device, ctx.progress)
        infer_s = time.perf_counter() - t0
        decryption, recovered, fstats, ftimings = recovered_set(preds, view, cfg.decompose, oracle, self.threat, ctx,
                                                                attack=self.name)
        stats = {"demasker": model_stats(gen, infer_s, len(view)), "decomposer": model_stats(dec, infer_s, len(view)),
                 **fstats}
        return ReleaseResult(decryption=decryption, recovered=recovered, stats=stats,
                             timings={"load_aux_s": data.load_s, "train_demasker_s": 0.0 if gen.cached else gen.train_s,
                                      "train_decomposer_s": 0.0 if dec.cached else dec.train_s,
                                      "inference_s": infer_s, **ftimings},
                             artifacts={"mixture": mixture, "predictions": preds, "encryptions": view.encryptions})

    def evaluate(self, result, key):
        """The demasked mixture against the true one (e times the key's mask): SSIM and the
        per-pixel sign accuracy where |mixture| >= SIGN_FLOOR; then the private images."""
        from hidebench.metrics import ssim

        out = {}
        if key.sign is not None:
            demasked = np.clip(result.artifacts["mixture"], -1, 1)
            mix_true = key.sign.astype(np.float32) * result.artifacts["encryptions"]
            strong = np.abs(mix_true) >= SIGN_FLOOR
            out["mixture_ssim"] = float(np.mean(ssim(demasked, mix_true)))
            out["sign_accuracy"] = float((np.sign(demasked) == np.sign(mix_true))[strong].mean())
        return {**out, **output_ssim(result.artifacts["predictions"], key)}
