"""A run killed at a random point and rerun gives the same result as an uninterrupted one
(stage caches are written atomically and keyed by config and upstream outputs)."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ATTACK = ["--set", "similarity.method=pearson", "--set", "reassignment.rounds=2", "--set", "regression.steps=5",
          "--set", "regression.adam_steps=5", "--quiet"]


def _cli(*args):
    return [sys.executable, "-m", "hidebench", *map(str, args)]


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume") / "ch"
    subprocess.run(_cli("challenge", "generate", "faces", "--n-priv", 8, "--T", 6, "--out", d, "--quiet"), check=True)
    return d


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(challenge, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HIDEBENCH_DATA"}
    t0 = time.perf_counter()
    subprocess.run(_cli("attack", "carlini", "--challenge", challenge, "--out", tmp_path / "full", *ATTACK),
                   check=True, env=env)
    full_s = time.perf_counter() - t0
    reference = np.load(tmp_path / "full" / "decryption.npy")
    rng = random.Random(1234)
    for _ in range(2):       # two kills at random points, then a run to completion
        out = tmp_path / "killed"
        p = subprocess.Popen(_cli("attack", "carlini", "--challenge", challenge, "--out", out, *ATTACK), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * full_s)
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = subprocess.run(_cli("attack", "carlini", "--challenge", challenge, "--out", tmp_path / "killed", *ATTACK),
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "killed" / "decryption.npy"), reference)
    assert not [p for p in (tmp_path / "killed").rglob("*") if ".tmp" in p.name or ".partial" in p.name]
