import json

import numpy as np
import pytest

from hidebench.app.harness import run_release_attack
from hidebench.app.report import build_report, fit_loglog, records_table
from hidebench.attacks.base import ATTACKS, get_attack
from hidebench.attacks.identity import baseline_decryption, rescaled_abs
from hidebench.context import ExecutionContext
from hidebench.defenses.challenge import generate_to_dir
from hidebench.recipes import load_recipe
from hidebench.record import SCHEMA_VERSION, load_record
from hidebench.threat import Coefficients, Membership, Oracle, ReleaseThreatModel
from hidebench.types import HidebenchError

CTX = ExecutionContext(progress=False)


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
    with pytest.raises(HidebenchError, match=r"unknown key\(s\) identity\.lr"):
        get_attack("identity")({"lr": 1})


def test_oracle_hands_out_only_the_granted_part(tiny_cross):
    _, key, _, _ = tiny_cross
    with pytest.raises(HidebenchError, match="unknown oracle"):
        ReleaseThreatModel(oracles=("everything",))
    oracle = Oracle(key, ("assignment", "lambdas"))
    assert "assignment" in oracle and "pairs" not in oracle
    m = oracle.get("assignment")
    assert isinstance(m, Membership) and np.array_equal(m.ids, key.private_of()) and m.classes is not None
    c = oracle.get("lambdas")
    assert isinstance(c, Coefficients) and np.allclose(c.values, key.lambdas[:, :2])
    assert not hasattr(m, "private") and not hasattr(c, "sign")          # never the key itself
    with pytest.raises(PermissionError):
        oracle.get("pairs")
    with pytest.raises(HidebenchError, match="no key"):
        Oracle(None, ("pairs",))
    with pytest.raises(HidebenchError, match="cannot use oracle"):
        get_attack("identity")(None, ReleaseThreatModel(oracles=("pairs",)))


def test_identity_baseline(tiny_cross):
    view, _, _, _ = tiny_cross
    d = rescaled_abs(view.encryptions)
    assert d.min() == pytest.approx(-1) and d.max() == pytest.approx(1)
    a = np.abs(view.encryptions[0]).ravel()
    assert np.corrcoef(a, d[0].ravel())[0, 1] == pytest.approx(1.0)
    view.scheme = "mixup"                    # a Mixup release: the mixture itself is the floor
    assert np.array_equal(baseline_decryption(view), view.encryptions)


def test_the_harness_never_mutates_the_callers_threat_model(small_dirs, tmp_path):
    _, dirs = small_dirs
    threat = ReleaseThreatModel()
    rec = run_release_attack("identity", dirs[0], tmp_path / "a", threat=threat, ctx=CTX)
    assert threat.aux == "recipe" and threat.pool is None
    assert rec.threat_model["aux"] == "lfw[1::2]" and rec.threat_model["pool"]["source"] == "photos"
    rec = run_release_attack("identity", dirs[0], tmp_path / "b", threat=ReleaseThreatModel(aux=None), ctx=CTX)
    assert rec.threat_model["aux"] is None                      # "no auxiliary data" is recorded as such


def test_run_records_and_report(small_dirs):
    root, dirs = small_dirs
    for d in dirs:
        rec = run_release_attack("identity", d, root / "runs" / d.name, ctx=CTX)
        assert rec.oracles == [] and set(rec.metrics["challenge"]) >= {"Max_SSIM", "Mean_L2"}
        assert rec.setting["T"] == 4 and rec.family == "release" and rec.context["device"] in ("cpu", "cuda")
        saved = json.loads((root / "runs" / d.name / "record.json").read_text())
        assert saved["schema_version"] == SCHEMA_VERSION and saved["timings"]["total_s"] >= 0
        assert load_record(root / "runs" / d.name / "record.json").metrics == rec.metrics
    df = records_table([root / "runs"])
    assert sorted(df["n_priv"]) == [6, 12] and "challenge.Max_SSIM" in df
    html = build_report([root / "runs"], root / "report")
    assert html.is_file() and (root / "report" / "results.csv").is_file() and (root / "report" / "scaling.png").is_file()
    with pytest.raises(HidebenchError, match="no record.json"):
        records_table([root / "report"])


def test_fit_exponent_recovers_power_law():
    n = np.array([25, 50, 100, 200])
    assert fit_loglog(n, 3.0 * n ** 2.5)["exponent"] == pytest.approx(2.5)
