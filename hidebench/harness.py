"""Run an attack on a challenge and record everything about the run as data.

The attack gets the public view and the oracle parts its threat model names; the key is
read only afterwards, to score the reconstruction. One JSON record per run holds config,
threat model, oracles, versions, timings and every metric.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from attacks.base import Oracle, ThreatModel, config_dict, get_attack
from hidebench.challenge_io import has_key, library_versions, load_key, load_public, read_manifest, write_json
from hidebench.metrics import challenge_metric, matched_set_metric


def score_result(decryption: np.ndarray, recovered: np.ndarray | None, key) -> dict:
    """The challenge metric, plus the Hungarian-matched set metric of the recovered images."""
    out = {"challenge": challenge_metric(decryption, key)}
    if recovered is not None and len(recovered):
        m = matched_set_metric(recovered, key.private)
        out["private_set"] = {"ssim": m["ssim"], "psnr": m["psnr"], "mse": m["mse"],
                              "per_image_ssim": m["per_image_ssim"].round(4).tolist()}
    return out


def run_attack(name: str, challenge_dir, out_dir, *, config: dict | None = None, threat: ThreatModel | None = None,
               progress: bool = True, score: bool = True) -> dict:
    """Run attack `name` on a challenge folder; write decryption.npy, recovered.npy and record.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threat = threat or ThreatModel()
    manifest_recipe = read_manifest(challenge_dir).get("recipe", {})
    if threat.aux is None and manifest_recipe.get("attacker", {}).get("aux"):
        threat.aux = manifest_recipe["attacker"]["aux"]     # the recipe's suggested auxiliary data
    if threat.public_pool and threat.pool is None and manifest_recipe.get("pool"):
        threat.pool = dict(manifest_recipe["pool"])
    attack = get_attack(name)(config, threat)
    view = load_public(challenge_dir)
    key = load_key(challenge_dir, view) if has_key(challenge_dir) and (score or threat.oracles) else None
    oracle = Oracle(key, threat.oracles)
    t0 = time.perf_counter()
    result = attack.run(view, oracle=oracle, cache_dir=out / "cache", progress=progress)
    total = time.perf_counter() - t0
    np.save(out / "decryption.npy", result.decryption.astype(np.float32))
    if result.recovered is not None:
        np.save(out / "recovered.npy", result.recovered.astype(np.float32))
    record = {
        "attack": name, "config": config_dict(attack.config), "threat_model": asdict(threat),
        "oracles": list(threat.oracles), "challenge": str(challenge_dir),
        "challenge_manifest": {k: v for k, v in read_manifest(challenge_dir).items() if k != "files"},
        "versions": library_versions(), "timings": {**result.timings, "total_s": total}, "stats": result.stats,
    }
    if score and key is not None:
        record["metrics"] = score_result(result.decryption, result.recovered, key)
        record["metrics"]["stages"] = attack.evaluate(result, key)
    write_json(out / "record.json", record)
    return record


def load_record(path) -> dict:
    return json.loads(Path(path).read_text())
