"""The Carlini attack's scalable path (carlini.dense_max): the same quantities as the dense path
without E x E or per-position n x n matrices."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import random_images
from test_carlini_grouping import AUX, _check_assignment, planted_pairs, release, run_grouping  # noqa: F401  (fixture)
from test_carlini_recovery import _oracle_global, smooth_images

from hidebench.attacks.carlini.config import RegressionConfig
from hidebench.attacks.carlini.mixing import design, lambdas_from_labels, sparse_design
from hidebench.attacks.carlini.regression import regress
from hidebench.attacks.grouping import assignment as asg
from hidebench.attacks.grouping import clustering as clu
from hidebench.attacks.grouping import scalable as sg
from hidebench.attacks.grouping.groups import evaluate_grouping
from hidebench.attacks.grouping.membership import co_membership, membership_matrix
from hidebench.defenses.instahide import EncryptionConfig, encrypt
from hidebench.metrics import ssim
from hidebench.types import HidebenchError

SCALABLE = {"dense_max": 0}


def test_co_membership_counts_rows_once():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(-1, 7, (80, 3)), rng.integers(-1, 9, (80, 2))
        dense = membership_matrix(a, 7, np.int64).T @ membership_matrix(b, 9, np.int64)
        np.testing.assert_array_equal(co_membership(a, b, 7, 9), dense)


def test_sparse_design_is_the_design():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 9, (50, 2))
    a[0] = [3, 3]                                   # a repeated group sums, as in the dense design
    coef = rng.random((50, 2))
    pw = rng.random(50)
    np.testing.assert_allclose(sparse_design(a, coef, 9, pw).toarray(), design(a, coef, 9, pw))
    np.testing.assert_allclose(sparse_design(a, coef, 9).toarray(), design(a, coef, 9))


def _masked_dense(F, support):
    S = F @ F.T
    np.fill_diagonal(S, -np.inf)
    S[(support.astype(float) @ support.T.astype(float)) == 0] = -np.inf
    return S


def test_neighbours_and_group_scores_match_the_dense_path():
    rng = np.random.default_rng(2)
    F = rng.normal(size=(300, 16)).astype(np.float32)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    support = rng.random((300, 5)) < 0.35
    idx, val = sg.neighbours(F, 7, support)
    S = _masked_dense(F, support)
    ref = clu.top_neighbours(S, 7)
    np.testing.assert_allclose(val, np.take_along_axis(S, ref, 1), rtol=1e-5, atol=1e-6)
    assert all(((support[e] & support[idx[e]]).any(1) | ~np.isfinite(val[e])).all() for e in range(300))
    groups = [rng.choice(300, size=rng.integers(2, 20), replace=False) for _ in range(9)]
    Sd = F @ F.T
    np.fill_diagonal(Sd, -2.0)
    np.testing.assert_allclose(sg.group_scores(F, groups), asg.cluster_scores(Sd, groups), atol=1e-5)


def test_prices_respect_capacity_and_find_the_planted_pairs():
    """The flow test's planted problem: every row's two true groups score 1 above noise."""
    rng = np.random.default_rng(0)
    E, C = 60, 6
    truth, scores, allowed = planted_pairs(rng, E, C)
    out, stats = sg.price_assign(scores, allowed, slots=2, capacity=2 * E // C, candidates=3)
    np.testing.assert_array_equal(np.sort(out, 1), np.sort(truth, 1))
    assert stats["overflow_units"] == 0
    # Crowding: every row prefers group 0, which holds only 10; prices push the rest elsewhere.
    crowd = rng.normal(0, 0.05, (E, C))
    crowd[:, 0] += 0.5
    out2, stats2 = sg.price_assign(crowd, allowed, slots=2, capacity=20, candidates=6)
    assert np.all(out2[:, 0] != out2[:, 1])
    assert np.bincount(out2.ravel(), minlength=C).max() <= 20 + stats2["overflow_units"]
    assert stats2["overflow_units"] <= 4


@pytest.fixture(scope="module")
def cross_release():
    rng = np.random.default_rng(3)
    n = 24
    priv = smooth_images(rng, n)
    view, key = encrypt(priv, rng.integers(0, 8, n), 8, EncryptionConfig(k=6, mode="cross", T=40), seed=4,
                        public_patches=random_images(rng, 300))
    return view, key, priv


def test_sparse_regression_matches_the_dense_one(cross_release):
    """k=6 cross with the true assignment: the sparse solvers recover the images as well as the
    dense ones (the alternating minimisation solves the same least squares)."""
    view, key, priv = cross_release
    a = key.private_of()
    lam, split = lambdas_from_labels(view.labels, a, key.private_labels)
    cfg = RegressionConfig(adam_steps=20)
    dense = regress(view.encryptions, a, lam, len(priv), split=split, cfg=cfg)
    sparse = regress(view.encryptions, a, lam, len(priv), split=split, cfg=cfg, sparse=True)
    np.testing.assert_allclose(sparse.stages["magnitudes"], dense.stages["magnitudes"], atol=1e-5)
    q_dense = ssim(_oracle_global(dense.images, priv), priv).mean()
    q_sparse = ssim(_oracle_global(sparse.images, priv), priv).mean()
    assert q_sparse > q_dense - 0.03
    # The alternating minimisation itself, from one start, agrees to float precision.
    cfg0 = RegressionConfig(init="magnitudes", adam_steps=0, steps=5)
    r0 = regress(view.encryptions, a, lam, len(priv), split=split, cfg=cfg0)
    r1 = regress(view.encryptions, a, lam, len(priv), split=split, cfg=cfg0, sparse=True)
    assert np.mean(np.abs(r0.images - r1.images) < 1e-3) > 0.999


def _planted_embedding(rng, n=30, T=20, classes=3, noise=0.5):
    """Rows holding two of n images (each the first image of T rows, the second of T more), F =
    unit (membership, the first image heavier, + Gaussian noise), labels' support the images' classes."""
    cls = np.arange(n) % classes
    first = np.repeat(np.arange(n), T)
    second = rng.integers(0, n, len(first))
    while (clash := second == first).any():
        second[clash] = rng.integers(0, n, clash.sum())
    ids = np.stack([first, second], 1)
    F = membership_matrix(ids[:, :1], n, np.float32) + 0.7 * membership_matrix(ids[:, 1:], n, np.float32)
    F = np.concatenate([F, np.zeros((len(F), 2 * n), np.float32)], 1) + rng.normal(0, noise / np.sqrt(n), (len(F), 3 * n))
    F = (F / np.linalg.norm(F, axis=1, keepdims=True)).astype(np.float32)
    support = np.zeros((len(F), classes), bool)
    support[np.arange(len(F))[:, None], cls[ids]] = True
    return F, support, ids, cls


def test_spectral_cores_find_each_classs_images():
    """The scalable path's per-class spectral clustering: exactly n cores, each inside one class's
    rows, nearly pure, one per image; the class counts come from the labels alone."""
    rng = np.random.default_rng(5)
    n, T = 30, 20
    F, support, ids, cls = _planted_embedding(rng, n, T)
    per = sg.images_per_class(support, n)
    assert per.sum() == n and np.abs(per - np.bincount(cls)).max() <= 1
    cores, stats = sg.spectral_cores(F, support, n, knn=T, core=T // 2)
    assert len(cores) == n and stats["clustering"] == "spectral_per_class"
    majority = []
    for g in cores:
        m = int(np.bincount(ids[g].ravel(), minlength=n).argmax())
        majority.append(m)
        assert support[g, cls[m]].all()
        assert (ids[g] == m).any(1).mean() >= 0.9
    assert len(set(majority)) >= 0.9 * n
    km, _ = sg.kmeans_cores(F, support, n, core=T // 2)
    assert len(km) == n


@pytest.mark.parametrize("method", ["spectral", "kmeans"])
def test_scalable_grouping_with_oracle_pairs(release, method):  # noqa: F811
    view, key, aux = release
    g, run = run_grouping(view, {**SCALABLE, "clustering": {"method": method}}, pairs_key=key)
    _check_assignment(g, view)
    assert g.stats["path"] == "scalable" and g.stats["assignment"] == "prices"
    assert g.stats["clustering"] == {"spectral": "spectral_per_class", "kmeans": "kmeans"}[method]
    m = evaluate_grouping(g, key)
    assert m["pair_auc"] == 1.0
    assert m["assignment_accuracy"] > 0.75 and m["class_accuracy"] > 0.9


def test_kmeans_cores_are_the_scalable_paths_only(release):  # noqa: F811
    view, key, _ = release
    with pytest.raises(HidebenchError, match="'kmeans' runs on the scalable path only"):
        run_grouping(view, {"clustering": {"method": "kmeans"}}, pairs_key=key)


def test_scalable_path_forms_no_dense_similarity(release, monkeypatch):  # noqa: F811
    """With dense_max below E the grouping never builds the E x E similarity and the regression
    never the per-position n x n vote matrices; the Pearson attack still beats chance."""
    from hidebench.attacks.carlini import regression, stages
    from hidebench.attacks.grouping import stages as grouping_stages
    from hidebench.attacks.grouping.membership import check_release
    from hidebench.context import ExecutionContext
    from hidebench.pipeline import run_pipeline
    from hidebench.threat import ReleaseThreatModel

    def refuse(*a, **k):
        raise AssertionError("dense path taken")

    monkeypatch.setattr(grouping_stages, "release_similarity", refuse)
    monkeypatch.setattr(grouping_stages, "find_groups", refuse)
    monkeypatch.setattr(regression, "sync_pixel_signs", refuse)
    view, key, aux = release
    cfg = stages.CarliniConfig.from_dict({**SCALABLE, "similarity": {"method": "pearson"},
                                          "reassignment": {"rounds": 1}})
    ctx = ExecutionContext(device="cpu", progress=False, seed=0)
    inp = stages.AttackInputs(view, cfg, ctx, check_release(view), threat=ReleaseThreatModel(aux=None, public_pool=False))
    run = run_pipeline(stages.STAGES, inp, ctx.stage_cache())
    g, reg = run.outputs["grouping"], run.outputs["regression"]
    _check_assignment(g, view)
    m = evaluate_grouping(g, key)
    assert m["pair_auc"] > 0.55 and m["assignment_accuracy"] > 0.25
    assert reg.stats["sync"]["solver"] == "lanczos"
    assert np.isfinite(run.outputs["decryption"].recovered).all()
    with pytest.raises(HidebenchError, match="rerank"):
        run_grouping(view, {**SCALABLE, "similarity": {"pair": {"rerank": 4}}}, aux=AUX)


def test_default_reassignment_rounds_follow_the_path(release):  # noqa: F811  (fixture)
    """reassignment.rounds "auto" (the default): five rounds on the dense path, one on the scalable
    path, where a round costs time linear in E, none on a release below min_T; an explicit count
    is run on both paths and any T."""
    from hidebench.attacks.carlini import stages
    from hidebench.attacks.grouping.membership import check_release
    from hidebench.context import ExecutionContext
    from hidebench.threat import ReleaseThreatModel

    view = release[0]
    T = int(view.T)
    ctx = ExecutionContext(device="cpu", progress=False, seed=0)
    for reassignment, dense, scalable in (({"min_T": T}, 5, 1), ({"rounds": 3}, 3, 3), ({"rounds": 0}, 0, 0),
                                          ({"min_T": T + 1}, 0, 0), ({"min_T": T + 1, "rounds": 2}, 2, 2)):
        for dense_max, want in ((10 ** 9, dense), (0, scalable)):
            cfg = stages.CarliniConfig.from_dict({"dense_max": dense_max, "reassignment": reassignment})
            inp = stages.AttackInputs(view, cfg, ctx, check_release(view),
                                      threat=ReleaseThreatModel(aux=None, public_pool=False))
            assert inp.reassignment_rounds == want
    with pytest.raises(HidebenchError, match="reassignment.rounds"):
        stages.CarliniConfig.from_dict({"reassignment": {"rounds": -2}})
