"""Estimating T (and so n_priv) for a release that states neither (attacks/carlini/count.py)."""
import dataclasses

import numpy as np
import pytest
from helpers import random_images

from hidebench.attacks.carlini.attack import Carlini
from hidebench.attacks.grouping.count import estimate_T
from hidebench.attacks.grouping.similarity import pearson_embedding
from hidebench.context import ExecutionContext
from hidebench.defenses.instahide import EncryptionConfig, encrypt
from hidebench.threat import ReleaseThreatModel
from hidebench.types import HidebenchError, ImageSet

E = 480
CLASSES = 4


class NoisePool:
    """The attacker's public pool: patches of the release's kind (random images)."""

    def patches(self, rng, m):
        return random_images(rng, m), None


def _release(T: int, seed: int):
    """E encryptions of E / T private noise images (k=6 cross; noise images are told apart by
    Pearson correlation alone), and 400 aux images of the same kind with their classes."""
    rng = np.random.default_rng(seed)
    n = E // T
    view, _ = encrypt(random_images(rng, n), np.arange(n) % CLASSES, CLASSES, EncryptionConfig(k=6, mode="cross", T=T),
                      seed=seed, public_patches=random_images(rng, 300))
    aux = ImageSet(random_images(rng, 400), np.arange(400) % CLASSES, [str(c) for c in range(CLASSES)], source="aux")
    return dataclasses.replace(view, T=None), aux


@pytest.mark.parametrize("T", [20, 10])
def test_tail_share_is_never_confidently_wrong(T):
    """The labels leave T, T / 2 and 2 T (and more) open. The similarity's tail share, simulated
    on the attacker's own encryptions, lies nearer the true T's than T / 2's, and the estimate is
    never a wrong T: where it cannot separate T from a neighbour (here Pearson on noise images
    at n 48 against 24, or 20 against 24), it stays ambiguous and the attack asks for T."""
    view, aux = _release(T, seed=T)
    est = estimate_T(view, aux, NoisePool(), pearson_embedding, seed=0)
    dist = {r["T"]: r["distance"] for r in est.candidates}
    assert est.source == "similarity" and {T // 2, T, 2 * T} <= set(dist)    # the labels alone cannot decide
    assert dist[T] < dist[T // 2]
    assert est.T in (None, T)


def test_ambiguous_estimate_is_one_error_asking_for_T():
    view, aux = _release(20, seed=3)
    assert estimate_T(view, aux, NoisePool(), pearson_embedding, seed=0, min_ratio=1e9).T is None
    assert estimate_T(view, None, None, None).T is None       # no aux data: no simulation, no estimate
    attack = Carlini({"similarity": {"method": "pearson"}}, ReleaseThreatModel(aux=None, public_pool=False))
    ctx = ExecutionContext(device="cpu", progress=False)
    with pytest.raises(HidebenchError, match=r"does not state T.*give --T or --n-priv"):
        attack.run(view, None, ctx)
