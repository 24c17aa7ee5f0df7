"""The Carlini attack is a function of its config, seed and release: reruns, in this process or
another, give bit-identical regression arrays and decryptions.

Regression-driven reassignment turns float-level noise into different discrete choices (another
pair for an encryption, another sign at a pixel), so any run-to-run wobble in the regression
shows up as different images. The attack runs with 2 torch threads here: the conftest's one
thread would hide order-dependent parallel reductions (e.g. the atomic adds of the backward of
x[idx] on CPU).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np

from hidebench.attacks.base import get_attack
from hidebench.context import ExecutionContext
from hidebench.threat import Oracle, ReleaseThreatModel
from hidebench.types import PublicView

CONFIG = {"similarity": {"method": "pearson"}, "reassignment": {"rounds": 2}, "regression": {"adam_steps": 20}}
CTX = ExecutionContext(device="cpu", threads=2, progress=False, seed=0)


def attack_arrays(view: PublicView, ctx: ExecutionContext = CTX) -> tuple[dict, dict]:
    """Run the whole attack (no oracle, so with reassignment rounds) without a cache; return its
    arrays and the regression stats."""
    attack = get_attack("carlini")(CONFIG, ReleaseThreatModel(aux=None, public_pool=False))
    with ctx.torch_threads():
        res = attack.run(view, Oracle(None, ()), ctx)
    a = res.artifacts
    reg = a["regression"]
    out = {"assignment_grouping": a["grouping"].assignment, "assignment": reg.assignment, "lambdas": reg.lambdas,
           "regressed": a["regressed"], "recovered": res.recovered, "decryption": res.decryption}
    out.update({f"stage_{k}": v for k, v in reg.steps.items()})
    return out, res.stats["regression"]


def _save_view(path: Path, view: PublicView) -> None:
    np.savez(path, encryptions=view.encryptions, labels=view.labels,
             meta=np.asarray([view.k, view.T]), mode=np.asarray(view.mode), scheme=np.asarray(view.scheme))


def _load_view(path) -> PublicView:
    z = np.load(path)
    k, T = (int(v) for v in z["meta"])
    return PublicView(z["encryptions"], z["labels"], k, str(z["mode"]), str(z["scheme"]), T=T)


def test_reassignment_rounds_are_reproducible_across_processes(tiny_cross, tmp_path):
    view = tiny_cross[0]
    _save_view(tmp_path / "view.npz", view)
    first, stats = attack_arrays(view)
    changed = stats["reassign_changed_fraction"]
    assert len(changed) == 2 and max(changed) > 0          # the rounds ran and moved encryptions

    # the same release in a fresh interpreter: no process state (RNGs, caches, threads) shared
    proc = subprocess.run([sys.executable, __file__, str(tmp_path / "view.npz"), str(tmp_path / "other.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = dict(np.load(tmp_path / "other.npz"))
    again, _ = attack_arrays(_load_view(tmp_path / "view.npz"))

    assert sorted(other) == sorted(first)
    for name in first:
        for label, run in (("subprocess", other), ("in-process rerun", again)):
            a, b = np.asarray(first[name]), np.asarray(run[name])
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.shape == b.shape else None
            assert np.array_equal(a, b), f"{name} differs in the {label} (max abs diff {diff})"


def test_seed_reaches_the_stages(tiny_cross, tmp_path):
    """ctx.seed is the attack's seed: every stage keys its cache entry by its own seed derived
    from it, and a seed-dependent start (regression init 'aligned') changes with it."""
    import json

    from hidebench.pipeline import stage_seed

    view = tiny_cross[0]
    assert len({stage_seed(0, s) for s in ("similarity_model", "pool", "grouping", "regression")}) == 4
    cfg = {"similarity": {"method": "pearson"}, "reassignment": {"rounds": 0},
           "regression": {"init": "aligned", "refine": "adam", "steps": 5}}
    regressed = {}
    for seed in (0, 1):
        ctx = CTX.replace(threads=1, seed=seed, cache_dir=tmp_path / f"seed{seed}")
        attack = get_attack("carlini")(cfg, ReleaseThreatModel(aux=None, public_pool=False))
        res = attack.run(view, Oracle(None, ()), ctx)
        regressed[seed] = res.artifacts["regressed"]
        for stage in ("grouping", "regression"):
            m = json.loads((tmp_path / f"seed{seed}" / stage / "manifest.json").read_text())
            assert m["config"]["seed"] == stage_seed(seed, stage)
    assert not np.array_equal(regressed[0], regressed[1])


if __name__ == "__main__":        # the subprocess: attack the saved release, save the arrays
    arrays, _ = attack_arrays(_load_view(sys.argv[1]))
    np.savez(sys.argv[2], **arrays)
