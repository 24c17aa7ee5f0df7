"""TextHide utility (a head trained on TextHide mixtures, records of family 'utility') and the text
sweep (hidebench.app.text_sweep: the sweep-file format over a TextHide recipe, resumable)."""
import json

import numpy as np
import pytest
from conftest import TEXT_SLICE

from hidebench.defenses.texthide_utility import TextUtilityConfig, train_text_classifier
from hidebench.text.scheme import TextHideConfig
from hidebench.types import HidebenchError


def _separable(rng, n, d=32):
    """Two classes of unit vectors around +-c, biased as sentence representations are."""
    y = rng.integers(0, 2, n)
    c = rng.normal(size=d)
    x = 0.6 + 0.5 * np.where(y[:, None] == 1, c, -c) + 0.4 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_head_learns_vanilla_and_through_texthide():
    x, y = _separable(np.random.default_rng(0), 900)
    x, y, xt, yt = x[:600], y[:600], x[600:], y[600:]
    cfg = TextUtilityConfig(epochs=15, dropout=0.0)
    van = train_text_classifier(x, y, xt, yt, 2, None, cfg, seed=1)
    assert van.test_accuracy_clean > 0.9 and van.test_accuracy_encrypted is None
    th = train_text_classifier(x, y, xt, yt, 2, TextHideConfig(k=2, m=4), cfg, seed=1)
    assert th.test_accuracy_encrypted > 0.8
    again = train_text_classifier(x, y, xt, yt, 2, TextHideConfig(k=2, m=4), cfg, seed=1)
    assert again.test_accuracy_encrypted == th.test_accuracy_encrypted            # deterministic for a seed
    assert len(th.curves["train_loss"]) == 15


def test_utility_record(tmp_path):
    from hidebench.app.text_utility import run_text_utility, text_summary_line
    from hidebench.context import ExecutionContext
    from hidebench.record import load_record
    from hidebench.text.recipe import load_text_recipe

    cfg = TextUtilityConfig(epochs=2, train=TEXT_SLICE, test="text:rotten_tomatoes[20::40]")
    rec = run_text_utility(load_text_recipe("texthide-rt", {"k": 2, "m": 4}), tmp_path / "u", cfg,
                           ctx=ExecutionContext(device="cpu", progress=False, seed=0))
    r = load_record(tmp_path / "u" / "record.json")
    assert r.family == "utility" and r.setting["scheme"] == "texthide" and r.setting["m"] == 4
    assert 0 <= r.metrics["test_accuracy_encrypted"] <= 1 and r.setting["n_train"] == 214
    assert "TextHide inside k=2 m=4" in text_summary_line(rec)
    with pytest.raises(HidebenchError, match="no default train/test split"):
        run_text_utility(load_text_recipe("texthide-rt", {"private_source": "textfolder:/x"}), tmp_path / "v",
                         TextUtilityConfig(), ctx=ExecutionContext(device="cpu", progress=False))


SWEEP = f"""
name = "tiny-text"
description = "two mask-pool sizes"
recipe = "r.toml"
seeds = [3]
[grid]
m = [1, 4]
[[attack]]
name = "texthide_invert"
config = {{ unmix = {{ rounds = 1 }} }}
[utility]
epochs = 2
train = "{TEXT_SLICE}"
test = "text:rotten_tomatoes[20::40]"
"""
RECIPE = f"""
name = "r"
[private]
source = "{TEXT_SLICE}"
n_priv = 20
[scheme]
scheme = "texthide"
k = 2
T = 4
[attacker]
candidates = "{TEXT_SLICE}"
"""


def test_text_sweep_runs_resumes_and_reports(tmp_path, capsys):
    from hidebench.app.cli import main
    from hidebench.app.text_sweep import is_text_sweep, load_text_sweep, run_text_sweep

    (tmp_path / "r.toml").write_text(RECIPE)
    (tmp_path / "s.toml").write_text(SWEEP)
    assert is_text_sweep(tmp_path / "s.toml") and not is_text_sweep("faces-quick")
    sw = load_text_sweep(tmp_path / "s.toml")
    assert sw.cells() == [{"m": 1}, {"m": 4}] and sw.attacks[0]["config"]["unmix"]["rounds"] == 1
    counts = run_text_sweep(sw, tmp_path / "S", progress=False)
    assert counts == {"done": 5, "failed": 0, "reused": 0}         # 2 attack runs, 2 utility runs and vanilla
    assert run_text_sweep(sw, tmp_path / "S", progress=False)["reused"] == 5
    rec = json.loads((tmp_path / "S" / "runs" / "m=4" / "seed=3" / "texthide_invert" / "record.json").read_text())
    assert rec["setting"]["m"] == 4 and rec["metrics"]["text"]["exact_match"] > 0.5
    table = (tmp_path / "S" / "results.md").read_text()
    assert table.count("| texthide_invert") == 2 and "vanilla" in table
    assert (tmp_path / "S" / "results.csv").is_file() and (tmp_path / "S" / "frontier.png").is_file()
    assert main(["sweep", str(tmp_path / "s.toml"), "--list"]) == 0
    assert "cell {'m': 4}" in capsys.readouterr().out


@pytest.mark.parametrize("change, match", [('m = [1, 4]', "grid.masks"), ('name = "texthide_invert"', "identity")])
def test_bad_text_sweeps(tmp_path, change, match):
    from hidebench.app.text_sweep import load_text_sweep

    (tmp_path / "r.toml").write_text(RECIPE)
    bad = SWEEP.replace(change, change.replace("m = ", "masks = ") if "grid" in match else 'name = "identity"')
    (tmp_path / "s.toml").write_text(bad)
    with pytest.raises(HidebenchError, match=match):
        load_text_sweep(tmp_path / "s.toml")
