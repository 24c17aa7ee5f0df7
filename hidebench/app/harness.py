"""Run an attack, score it, and write its run record: the one harness of both families.

Release attacks get the public view and what their resolved ReleaseThreatModel grants; the key
is read for an oracle only when the threat model names one, and otherwise only after the attack,
to score it. Update attacks get what their UpdateThreatModel builds from the client's shared
update. Every run writes record.json (hidebench.record.RunRecord) last, atomically.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hidebench.attacks.base import ReleaseAttack, get_attack
from hidebench.challenge_io import (
    check_out_dir,
    check_writable_dir,
    has_key,
    library_versions,
    load_key,
    load_public,
    read_manifest,
)
from hidebench.context import ExecutionContext, machine_description, peak_rss_mb
from hidebench.data import source_size
from hidebench.metrics import challenge_metric, matched_set_metric
from hidebench.record import RunRecord
from hidebench.threat import Oracle, ReleaseThreatModel
from hidebench.types import HidebenchError


def save_array(path: Path, a: np.ndarray) -> None:
    """np.save through a temporary name: a killed run never leaves a half-written array."""
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, np.asarray(a, dtype=np.float32))
    tmp.replace(path)


def prepare_out(out_dir) -> Path:
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def score_release(decryption: np.ndarray, recovered: np.ndarray | None, key) -> dict:
    """The challenge metric, plus the Hungarian-matched set metric of the recovered images."""
    out = {"challenge": challenge_metric(decryption, key)}
    if recovered is not None and len(recovered):
        m = matched_set_metric(recovered, key.private)
        out["private_set"] = {"ssim": m["ssim"], "psnr": m["psnr"], "mse": m["mse"],
                              "per_image_ssim": m["per_image_ssim"].round(4).tolist()}
    return out


def release_setting(view, manifest: dict) -> dict:
    return {"scheme": view.scheme, "mode": view.mode, "k": view.k, "T": view.T, "n_priv": view.n_private,
            "n_encryptions": len(view), "recipe": (manifest.get("recipe") or {}).get("name")}


def _run_into(attack, view, oracle, ctx: ExecutionContext, out_dir):
    """Check the cache and model folders, prepare out_dir, run the attack under the context's
    threads (stage caches in out_dir/cache unless the context names one) and write its
    decryption and recovered arrays. Returns (out, ctx, result, seconds)."""
    if ctx.cache_dir is not None:
        check_writable_dir(ctx.cache_dir, "--cache")
    if attack.uses_models and ctx.model_dir is not None:
        check_writable_dir(ctx.model_dir, "--model-dir")
    out = prepare_out(out_dir)
    if ctx.cache_dir is None:
        ctx = ctx.replace(cache_dir=out / "cache")
    t0 = time.perf_counter()
    with ctx.torch_threads():
        result = attack.run(view, oracle, ctx)
    total = time.perf_counter() - t0
    save_array(out / "decryption.npy", result.decryption)
    if result.recovered is not None:
        save_array(out / "recovered.npy", result.recovered)
    return out, ctx, result, total


def run_release_attack(name: str, challenge_dir, out_dir, *, config=None, threat: ReleaseThreatModel | None = None,
                       ctx: ExecutionContext | None = None, score: bool = True, release: dict | None = None) -> RunRecord:
    """Run release attack `name` on a challenge folder; write decryption.npy, recovered.npy and
    record.json under out_dir (stage caches under ctx.cache_dir, default out_dir/cache).
    release: what a release states in prose (k, mode, scheme, T, n_priv) for a folder without a
    manifest; a value contradicting the manifest is an error."""
    cls = get_attack(name)
    if not issubclass(cls, ReleaseAttack):
        raise HidebenchError(f"{name} attacks a federated update, not a release: see `hidebench attack {name} --help`")
    if cls.modality == "text":
        if release:
            raise HidebenchError(f"{name} reads TextHide releases, whose manifest states their scheme: "
                                 f"drop {', '.join(sorted(release))}")
        return run_text_release_attack(cls, challenge_dir, out_dir, config=config, threat=threat, ctx=ctx, score=score)
    # Everything that can be refused is checked before --out is touched.
    check_out_dir(out_dir)
    manifest = read_manifest(challenge_dir)
    view = load_public(challenge_dir, **(release or {}))
    threat = (threat or ReleaseThreatModel()).resolve(manifest)       # a resolved copy
    attack = cls(config, threat)
    key = load_key(challenge_dir, view) if threat.oracles or (score and has_key(challenge_dir)) else None
    oracle = Oracle(key if threat.oracles else None, threat.oracles)    # hands out only the named parts
    key = key if score else None
    ctx = ctx or ExecutionContext.from_env()
    ctx.check_device()
    if threat.aux:
        source_size(threat.aux, data_root=ctx.data_root)      # a missing aux source fails now, not mid-attack
    out, ctx, result, total = _run_into(attack, view, oracle, ctx, out_dir)
    metrics = {}
    if key is not None:
        metrics = score_release(result.decryption, result.recovered, key)
        metrics["stages"] = attack.evaluate(result, key)
    record = RunRecord(
        attack=name, family="release", config=attack.config.to_dict(), threat_model=threat.to_dict(),
        oracles=list(threat.oracles), seed=ctx.seed, setting=release_setting(view, manifest), metrics=metrics,
        timings={**result.timings, "total_s": total}, peak_memory_mb=peak_rss_mb(), stats=result.stats,
        source={"challenge": str(challenge_dir), "manifest": {k: v for k, v in manifest.items() if k != "files"}},
        context=resolved_context(ctx), versions=library_versions())
    record.write(out / "record.json")
    return record


def run_text_release_attack(cls, challenge_dir, out_dir, *, config=None, threat=None,
                            ctx: ExecutionContext | None = None, score: bool = True) -> RunRecord:
    """run_release_attack for an attack on a TextHide release (cls.modality 'text'): writes
    decryption.npy (E x d), recovered.npy and recovered_texts.json when the attack gives them,
    gallery.md (private | recovered sentence, owner-only) when it recovers sentences and the key
    scores them, and record.json (hidebench.text.metrics for the metrics)."""
    from hidebench.app.text_gallery import write_gallery
    from hidebench.challenge_io import write_json
    from hidebench.text.metrics import score_text_release
    from hidebench.text.release import load_text_key, load_text_public
    from hidebench.text.threat import TextOracle, TextThreatModel

    check_out_dir(out_dir)
    manifest = read_manifest(challenge_dir)
    view = load_text_public(challenge_dir)
    threat = threat if threat is not None else TextThreatModel()
    if isinstance(threat, dict):
        threat = TextThreatModel.from_dict(threat)
    if not isinstance(threat, TextThreatModel):
        raise HidebenchError(f"{cls.name} takes a TextThreatModel, got {type(threat).__name__}")
    threat = threat.resolve(manifest)
    attack = cls(config, threat)
    key = load_text_key(challenge_dir, view) if threat.oracles or (score and has_key(challenge_dir)) else None
    oracle = TextOracle(key if threat.oracles else None, threat.oracles)
    key = key if score else None
    ctx = ctx or ExecutionContext.from_env()
    ctx.check_device()
    if threat.candidates:
        from hidebench.text.corpus import text_source_size

        text_source_size(threat.candidates)          # a missing source or package fails now, not mid-attack
    out, ctx, result, total = _run_into(attack, view, oracle, ctx, out_dir)
    if result.texts is not None:
        write_json(out / "recovered_texts.json", list(result.texts))
    metrics = {}
    if key is not None:
        metrics, rows = score_text_release(result.decryption, result.recovered, result.texts, key)
        metrics["stages"] = attack.evaluate(result, key)
        if rows:
            t = metrics["text"]
            write_gallery(out / "gallery.md", rows, f"{cls.name} on {Path(challenge_dir).name}",
                          f"TextHide k={view.k}, m={view.m}, {view.mode}; {len(key.private)} private sentences, "
                          f"candidates {threat.candidates}. Exact match {t['exact_match']:.3f}, token F1 "
                          f"{t['token_f1']:.3f}, BLEU {t['bleu']:.3f}.")
    setting = {"scheme": view.scheme, "mode": view.mode, "k": view.k, "m": view.m, "T": view.T, "n_priv": view.n_private,
               "n_encryptions": len(view), "recipe": (manifest.get("recipe") or {}).get("name"),
               "encoder": view.encoder.get("id")}
    record = RunRecord(
        attack=cls.name, family="release", config=attack.config.to_dict(), threat_model=threat.to_dict(),
        oracles=list(threat.oracles), seed=ctx.seed, setting=setting, metrics=metrics,
        timings={**result.timings, "total_s": total}, peak_memory_mb=peak_rss_mb(), stats=result.stats,
        source={"challenge": str(challenge_dir), "manifest": {k: v for k, v in manifest.items() if k != "files"}},
        context=resolved_context(ctx), versions=library_versions())
    record.write(out / "record.json")
    return record


def resolved_context(ctx: ExecutionContext) -> dict:
    """The context as run: device resolved, and the machine."""
    d = {**ctx.to_dict(), "machine": machine_description()}
    if d["device"] == "auto":
        try:
            d["device"] = str(ctx.torch_device())
        except ImportError:
            d["device"] = "cpu"
    return d



# ----------------------------------------------------------------------------- update attacks

def run_update_attack(name: str, experiment, out_dir, *, config=None, threat=None,
                      ctx: ExecutionContext | None = None) -> RunRecord:
    """Simulate a federated client (hidebench.defenses.federated.simulate_client), run update attack
    `name` on what its threat model grants, score it, and write under out_dir:

    recovered.npy (B x 32 x 32 x 3, recovered[i] matched to the client's input i), grid.png
    (private | input | recovered), record.json (a RunRecord of family 'update'; metrics
    vs_input and vs_private with Hungarian-matched ssim/psnr/mse, label_accuracy, and under a
    defense the mean over inputs of the best SSIM against any private image in the mix), and,
    under a defense, challenge/: the recovered encryptions in challenge format with the
    client's key, so that a release attack (e.g. carlini) can decode them.

    experiment: a hidebench.defenses.client.ClientExperiment or its dict; config: the attack's Config or
    dict; threat: a hidebench.threat.UpdateThreatModel or dict; ctx: seed, device, threads,
    data root, progress. Everything that can be refused is checked before out_dir is touched.
    """
    from hidebench.attacks.base import UpdateAttack
    from hidebench.defenses.client import ClientExperiment

    cls = get_attack(name)
    if not issubclass(cls, UpdateAttack):
        raise HidebenchError(f"{name} attacks a public release, not a federated update: run it on a challenge "
                             f"folder (run_release_attack, `hidebench attack {name} --challenge DIR`)")
    exp = experiment if isinstance(experiment, ClientExperiment) else ClientExperiment.from_dict(experiment)
    attack = cls(config, threat)
    out = check_out_dir(out_dir)
    ctx = ctx or ExecutionContext.from_env()
    ctx.check_device()

    from hidebench.defenses.federated import simulate_client

    t0 = time.perf_counter()
    with ctx.torch_threads():
        client = simulate_client(exp, ctx)
        update = attack.threat.attacker_update(client.update, n_classes=client.n_classes,
                                               labels=client.batch.soft_labels, defense_k=client.defense_k)
        t1 = time.perf_counter()
        result = attack.run(update, client.model, ctx)
    t2 = time.perf_counter()
    metrics, rec, rec_labels = score_update(result.recovered, result.labels, client.batch, client.n_classes)

    out = prepare_out(out)
    save_array(out / "recovered.npy", rec)
    from hidebench.app.update_outputs import CHALLENGE_DIR, save_chaining_challenge, save_grid

    m = metrics
    save_grid(out / "grid.png", client.batch.private, client.batch.inputs, rec,
              f"{name} | {exp.defense} k={exp.k} {exp.mode} | B={exp.batch_size} | "
              f"SSIM input {m['vs_input']['ssim']:.3f} private {m['vs_private']['ssim']:.3f}")
    outputs = {"recovered": "recovered.npy", "grid": "grid.png"}
    if exp.defense != "none" and client.batch.key is not None and len(rec) == len(client.batch.inputs):
        save_chaining_challenge(out, rec, rec_labels, client.batch.key, k=exp.k, mode=exp.mode, scheme=exp.defense,
                                class_names=client.class_names,
                                origin={"origin": "recovered from a federated update by hidebench (run_update_attack)",
                                        "attack": name, "data": exp.data})
        outputs["challenge"] = CHALLENGE_DIR
    model = {"name": exp.model, "n_classes": client.n_classes, **client.weights,
             "n_parameters": int(sum(p.numel() for p in client.model.parameters()))}
    attack_s = t2 - t1
    record = RunRecord(
        attack=name, family="update", config=attack.config.to_dict(), threat_model=attack.threat.to_dict(),
        oracles=[], seed=ctx.seed, setting=update_setting(exp), metrics=metrics,
        timings={**client.timings, "attack_s": attack_s, "attack_per_image_s": attack_s / exp.batch_size,
                 **{f"attack_{k}": v for k, v in result.timings.items()}, "total_s": t2 - t0},
        peak_memory_mb=peak_rss_mb(), stats=result.stats,
        source={"experiment": exp.to_dict(), "data": client.data, "model": model, "outputs": outputs},
        context={**resolved_context(ctx), "device": client.device}, versions=library_versions())
    record.write(out / "record.json")
    return record


def update_setting(exp) -> dict:
    """The record's setting of a client experiment: the defense as the scheme (None without
    one; mode and k then do not apply), the batch size; no release sizes."""
    defended = exp.defense != "none"
    return {"scheme": exp.defense if defended else None, "mode": exp.mode if defended else None,
            "k": exp.k if defended else None, "T": None, "n_priv": None, "n_encryptions": None,
            "batch_size": exp.batch_size, "defense": exp.defense, "model": exp.model, "update": exp.update,
            "data": exp.data}


def score_update(recovered: np.ndarray, labels: np.ndarray, batch,
                 n_classes: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of a recovered batch against the client's inputs and private images, and the
    recovered images and labels in input order (when as many were recovered as the client sent).

    vs_input / vs_private: Hungarian-matched SSIM, PSNR, MSE; label_accuracy: overlap of the
    multisets of top labels over B; vs_private_in_mix_max_ssim (under a defense): the mean over
    inputs of the best SSIM against any private image mixed into it."""
    from hidebench.metrics import ssim
    from hidebench.types import check_images

    rec = check_images("recovered images", recovered, value_range=1.0).astype(np.float32)
    labels = np.asarray(labels, np.float32)
    if labels.shape != (len(rec), n_classes):
        raise HidebenchError(f"the attack returned labels of shape {labels.shape}, expected {(len(rec), n_classes)}")
    vs_input = matched_set_metric(rec, batch.inputs)
    vs_private = matched_set_metric(rec, batch.private)
    if len(rec) == len(batch.inputs):
        perm = np.empty(len(batch.inputs), dtype=np.int64)
        match = vs_input["match"]
        perm[match[:, 1]] = match[:, 0]
        rec, labels = rec[perm], labels[perm]
    true_top = np.sort(batch.soft_labels.argmax(1))
    rec_top = np.sort(labels.argmax(1))
    overlap = sum(min(int((true_top == c).sum()), int((rec_top == c).sum())) for c in range(n_classes))
    metrics = {"vs_input": {k: vs_input[k] for k in ("ssim", "psnr", "mse")},
               "vs_private": {k: vs_private[k] for k in ("ssim", "psnr", "mse")},
               "per_image_ssim_vs_input": vs_input["per_image_ssim"].tolist(),
               "per_image_ssim_vs_private": vs_private["per_image_ssim"].tolist(),
               "label_accuracy": overlap / len(batch.soft_labels)}
    if batch.key is not None and len(rec) == len(batch.inputs):
        priv = batch.key.private[batch.key.private_of()]          # B x slots x H x W x C
        s_any = np.stack([ssim(rec, priv[:, j]) for j in range(priv.shape[1])], 1)
        metrics["vs_private_in_mix_max_ssim"] = float(s_any.max(1).mean())
    return metrics, rec, labels
