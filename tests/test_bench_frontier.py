"""The frontier of benchmarks/bench_utility.py: each setting's accuracy beside the best attack
without oracles on it, from sweep results (issue 33)."""
import pandas as pd
import pytest

from hidebench.record import RunRecord


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("bench_utility")


def _summary(bench):
    rows = [("comparison", "vanilla", 0.90, float("nan")), ("comparison", "instahide-inside-k4", 0.60, 0.45),
            ("comparison", "mixup-inside-k4", 0.80, 0.78), ("budget", "instahide-inside-k4", 0.30, 0.20)]
    return pd.DataFrame([{"group": g, "setting": s, "model": "fast", "epochs": 4, "steps": 392, "device": "cpu",
                          "machine": "m", "n": 3, "clean_mean": c, "clean_sd": 0.01, "encrypted_mean": e,
                          "encrypted_sd": 0.01, "train_s": 100.0} for g, s, c, e in rows])


def _results(path, rows):
    pd.DataFrame([{"status": st, "scheme": sc, "mode": "inside", "k": 4, "T": 10, "n_priv": 100, "label": lab,
                   "oracles": orc, "Max_SSIM": m} for sc, lab, orc, m, st in rows]).to_csv(path, index=False)
    return str(path)


def test_frontier_takes_the_best_attack_without_oracles(bench, tmp_path):
    a = _results(tmp_path / "a.csv", [("instahide", "identity", "none", 0.05, "done"),
                                      ("instahide", "carlini", "none", 0.40, "done"),
                                      ("instahide", "carlini-oracle", "assignment", 0.95, "done"),
                                      ("instahide", "fdn", "none", 0.99, "failed")])
    b = _results(tmp_path / "b.csv", [("mixup", "carlini", "none", 0.70, "done")])
    record = tmp_path / "run" / "record.json"             # a single attack run beside the sweeps
    record.parent.mkdir()
    RunRecord(attack="fdn", family="release", config={}, threat_model={}, oracles=[], seed=0,
              setting={"scheme": "mixup", "mode": "inside", "k": 4, "T": 10, "n_priv": 100},
              metrics={"challenge": {"Max_SSIM": 0.75, "Mean_SSIM": 0.5, "Min_L2": 0.1, "Mean_L2": 0.2}}).write(record)
    front = {r["defense"]: r for r in bench.frontier_rows(_summary(bench), [a, b, str(record)])}
    assert set(front) == {"vanilla (no defense)", "instahide inside k=4", "mixup inside k=4"}
    assert front["vanilla (no defense)"]["best_Max_SSIM"] == 1.0 and front["vanilla (no defense)"]["accuracy"] == 0.90
    ih = front["instahide inside k=4"]
    assert (ih["best_attack"], ih["best_Max_SSIM"], ih["accuracy"], ih["accuracy_encrypted"]) == ("carlini", 0.40, 0.60, 0.45)
    assert (front["mixup inside k=4"]["best_attack"], front["mixup inside k=4"]["best_Max_SSIM"]) == ("fdn", 0.75)


def test_a_missing_privacy_file_is_one_error_line(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path / "o"), "--replot", "--privacy", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"--privacy: no results.csv or record.json at {tmp_path / 'nope'} "
                            "(a sweep folder or an attack's run folder)")


def test_the_table_states_each_cost_beside_the_authors(bench, tmp_path):
    a = _results(tmp_path / "a.csv", [("instahide", "carlini", "none", 0.40, "done")])
    summary = _summary(bench)
    md = bench.markdown(summary, bench.frontier_rows(summary, [a]), "python benchmarks/bench_utility.py --out B")
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["instahide-inside-k4"] == ("| instahide-inside-k4 | fast, 4 | 3 | 0.6000 ± 0.0100 | 0.4500 ± 0.0100 | "
                                           "30.0 | 2.5 | 100 |")
    assert rows["mixup-inside-k4"].split(" | ")[5:7] == ["10.0", ""]
    assert rows["instahide inside k=4"] == "| instahide inside k=4 | 0.600 / 0.450 | carlini | 0.400 |"
    assert md.rstrip().endswith("`python benchmarks/bench_utility.py --out B`")
