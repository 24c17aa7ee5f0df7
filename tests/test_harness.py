import json

import numpy as np
import pytest

from attacks.base import ATTACKS, Oracle, ThreatModel, get_attack, validate_config
from attacks.identity import IdentityConfig, rescaled_abs
from defenses.challenge import generate_to_dir
from hidebench.harness import run_attack
from hidebench.recipes import load_recipe
from hidebench.report import build_report, fit_exponent, records_table
from hidebench.types import HidebenchError


@pytest.fixture(scope="module")
def small_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    dirs = []
    for n in (6, 12):
        d = root / f"ch{n}"
        generate_to_dir(load_recipe("faces", {"n_priv": n, "T": 4, "pool_screen": 40}), d, progress=False)
        dirs.append(d)
    return root, dirs


def test_registry_and_config_validation():
    assert get_attack("identity") is ATTACKS["identity"]
    with pytest.raises(HidebenchError, match="unknown attack 'nope'"):
        get_attack("nope")
    with pytest.raises(HidebenchError, match=r"unknown IdentityConfig key\(s\) \['lr'\]"):
        validate_config(IdentityConfig, {"lr": 1})


def test_oracle_hands_out_only_what_was_granted(tiny_cross):
    _, key, _, _ = tiny_cross
    with pytest.raises(HidebenchError, match="unknown oracle"):
        ThreatModel(oracles=("everything",))
    oracle = Oracle(key, ("assignment",))
    assert "assignment" in oracle and "lambdas" not in oracle
    assert oracle.get("assignment") is key
    with pytest.raises(PermissionError):
        oracle.get("lambdas")
    with pytest.raises(HidebenchError, match="no key"):
        Oracle(None, ("pairs",))


def test_identity_baseline_is_rescaled_magnitude(tiny_cross):
    view, _, _, _ = tiny_cross
    d = rescaled_abs(view.encryptions)
    assert d.min() == pytest.approx(-1) and d.max() == pytest.approx(1)
    a = np.abs(view.encryptions[0]).ravel()
    assert np.corrcoef(a, d[0].ravel())[0, 1] == pytest.approx(1.0)


def test_run_records_and_report(small_dirs):
    root, dirs = small_dirs
    for d in dirs:
        rec = run_attack("identity", d, root / "runs" / d.name, progress=False)
        assert rec["oracles"] == [] and set(rec["metrics"]["challenge"]) >= {"Max_SSIM", "Mean_L2"}
        assert rec["challenge_manifest"]["scheme"]["T"] == 4
        saved = json.loads((root / "runs" / d.name / "record.json").read_text())
        assert saved["timings"]["total_s"] >= 0 and saved["versions"]["hidebench"]
    df = records_table([root / "runs"])
    assert sorted(df["n_priv"]) == [6, 12] and "challenge.Max_SSIM" in df
    html = build_report([root / "runs"], root / "report")
    assert html.is_file() and (root / "report" / "results.csv").is_file() and (root / "report" / "scaling.png").is_file()
    with pytest.raises(HidebenchError, match="no record.json"):
        records_table([root / "report"])


def test_fit_exponent_recovers_power_law():
    n = np.array([25, 50, 100, 200])
    assert fit_exponent(n, 3.0 * n ** 2.5) == pytest.approx(2.5)
