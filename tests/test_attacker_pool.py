"""The attacker's public pool: a larger screen, and a fresh subset of regions per round of its
own encryptions (so a similarity model cannot learn its few patches by heart)."""
import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.data import PoolConfig, PublicPool, build_pool, load_source
from hidebench.recipes import load_recipe

POOL = PoolConfig(source="photos", region=96, screen=30, min_keypoints=20, patch_mode="resize")


def test_subset_draws_distinct_regions():
    pool = build_pool(POOL, np.random.default_rng(0), progress=False)
    sub = pool.subset(np.random.default_rng(1), 5)
    assert len(sub.regions) == 5 and sub.patch_mode == pool.patch_mode and sub.screens == 1
    members = {r.tobytes() for r in pool.regions}
    assert len({r.tobytes() for r in sub.regions}) == 5 and all(r.tobytes() in members for r in sub.regions)
    assert pool.subset(np.random.default_rng(1), len(pool.regions) + 3) is pool


def test_rounds_take_fresh_regions(monkeypatch, tmp_path):
    from hidebench.challenge_io import load_public
    from hidebench.defenses.challenge import generate_to_dir

    generate_to_dir(load_recipe("faces", {"n_priv": 8, "T": 4}), tmp_path / "ch", progress=False)
    view, aux = load_public(tmp_path / "ch"), load_source("lfw[1::2]")
    one = build_pool(POOL, np.random.default_rng(0), progress=False)
    four = build_pool(POOL, np.random.default_rng(0), progress=False, screens=4)
    assert len(four.regions) > 2.5 * len(one.regions) and four.screened == 4 * one.screened
    assert (one.screens, four.screens) == (1, 4)
    used = []
    patches = PublicPool.patches

    def spy(self, rng, n):
        used.append({r.tobytes() for r in self.regions})
        return patches(self, rng, n)

    monkeypatch.setattr(PublicPool, "patches", spy)
    for pool, screens in ((one, 1), (four, 4)):
        used.clear()
        att = AttackerEncryptions(view, aux, n_images=10, T=3, pool=pool, seed=0)
        for _ in range(4):
            att.draw()
        per_round = -(-len(pool.regions) // screens)
        assert all(len(u) == per_round for u in used)
        seen = set().union(*used)
        if screens == 1:        # one draw lends the same regions to every round
            assert seen == {r.tobytes() for r in one.regions}
        else:                   # four rounds of a quarter each reach well beyond one round's regions
            assert len(seen) > 1.8 * per_round
