import numpy as np
import pytest

from hidebench.stage_cache import StageCache, arrays_digest


def _counting(value):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.full(4, value, dtype=np.float32)}
    return compute, calls


def test_hit_miss_and_config_change(tmp_path):
    c = StageCache(tmp_path)
    f, calls = _counting(1.0)
    c.get_or_compute("a", {"p": 1}, f)
    c.get_or_compute("a", {"p": 1}, f)
    assert len(calls) == 1 and c.hits["a"]
    c.get_or_compute("a", {"p": 2}, f)
    assert len(calls) == 2 and not c.hits["a"]


def test_downstream_is_recomputed_when_upstream_output_changes(tmp_path):
    """Recomputing a stage with the same config but a different output (what --stages does)
    must invalidate the stages that consumed it."""
    c = StageCache(tmp_path)
    up1, _ = _counting(1.0)
    down, calls = _counting(9.0)
    c.get_or_compute("up", {"p": 1}, up1)
    c.get_or_compute("down", {}, down, upstream=[c.digests["up"]])
    c = StageCache(tmp_path, recompute={"up"})
    up2, _ = _counting(2.0)                      # same config, other output
    c.get_or_compute("up", {"p": 1}, up2)
    c.get_or_compute("down", {}, down, upstream=[c.digests["up"]])
    assert len(calls) == 2
    c.get_or_compute("up", {"p": 1}, up2)        # same output again: downstream stays cached
    c.get_or_compute("down", {}, down, upstream=[c.digests["up"]])
    assert len(calls) == 2 and c.hits["down"]


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage", "flip", "delete"])
def test_corrupt_entry_is_reported_and_recomputed(tmp_path, damage):
    log = []
    c = StageCache(tmp_path, log=log.append)
    f, calls = _counting(3.0)
    c.get_or_compute("a", {}, f)
    p = tmp_path / "a" / "arrays.npz"
    blob = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(blob[: len(blob) // 2])
    elif damage == "zero":
        p.write_bytes(b"\0" * len(blob))
    elif damage == "garbage":
        p.write_bytes(b"not a zip at all")
    elif damage == "flip":
        b = bytearray(blob)
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))
    else:
        p.unlink()
    out = c.get_or_compute("a", {}, f)
    assert len(calls) == 2 and np.all(out["x"] == 3.0)
    assert len(log) == 1 and "corrupt" in log[0] and "recomputing" in log[0]
    assert c.get_or_compute("a", {}, f)["x"][0] == 3.0 and len(calls) == 2     # the entry is whole again


def test_corrupt_manifest_is_a_miss(tmp_path):
    c = StageCache(tmp_path)
    f, calls = _counting(1.0)
    c.get_or_compute("a", {}, f)
    (tmp_path / "a" / "manifest.json").write_text("{ not json")
    c.get_or_compute("a", {}, f)
    assert len(calls) == 2


def test_recompute_forces_a_stage_and_what_follows_when_its_output_changes(tmp_path):
    c = StageCache(tmp_path)
    up, up_calls = _counting(1.0)
    down, down_calls = _counting(2.0)
    c.get_or_compute("up", {}, up)
    c.get_or_compute("down", {}, down, upstream=[c.digests["up"]])
    c2 = StageCache(tmp_path, recompute={"up"})
    c2.get_or_compute("up", {}, up)
    c2.get_or_compute("down", {}, down, upstream=[c2.digests["up"]])
    assert len(up_calls) == 2 and len(down_calls) == 1      # same output: downstream still valid


def test_digest_ignores_the_timings_but_not_the_content():
    a = {"x": np.arange(3.0), "timings": np.asarray('{"fit_s": 1.0}')}
    assert arrays_digest(a) == arrays_digest({**a, "timings": np.asarray('{"fit_s": 2.5}')})
    assert arrays_digest(a) != arrays_digest({**a, "x": np.arange(3.0) + 1e-9})
