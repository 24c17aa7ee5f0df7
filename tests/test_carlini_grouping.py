"""Stages 1-3 of the Carlini attack (similarity, clustering, assignment) on tiny synthetic releases."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hidebench.attacks.carlini.config import CarliniConfig, ClusteringConfig, SimilarityConfig
from hidebench.attacks.carlini.stages import STAGES, AttackInputs, check_inputs
from hidebench.attacks.grouping import assignment as asg
from hidebench.attacks.grouping import clustering as clu
from hidebench.attacks.grouping.groups import Grouping, evaluate_grouping, oracle_grouping, shown_groups
from hidebench.attacks.grouping.membership import check_release, lambdas_from_labels
from hidebench.context import ExecutionContext
from hidebench.data import load_source
from hidebench.defenses.instahide import EncryptionConfig, encrypt
from hidebench.pipeline import run_pipeline
from hidebench.threat import Membership, Oracle, ReleaseThreatModel
from hidebench.types import HidebenchError, PublicView

N_PRIV, T = 24, 8
AUX = "lfw[1::2]"


def run_grouping(view, cfg=None, *, aux=None, seed=0, cache_dir=None, pairs_key=None, model_dir=None):
    """The attack's first stages (similarity model, grouping) through the stage runner; returns
    (Grouping, PipelineRun)."""
    ctx = ExecutionContext(device="cpu", progress=False, seed=seed, cache_dir=cache_dir, model_dir=model_dir)
    pairs = Oracle(pairs_key, ("pairs",)).get("pairs", len(view)) if pairs_key is not None else None
    inp = AttackInputs(view, CarliniConfig.from_dict(cfg), ctx, check_release(view),
                       threat=ReleaseThreatModel(aux=aux, public_pool=False), pairs=pairs)
    check_inputs(inp)
    run = run_pipeline([s for s in STAGES if s.name in ("similarity_model", "grouping")], inp, ctx.stage_cache())
    return run.outputs["grouping"], run


@pytest.fixture(scope="module")
def release():
    """12 private LFW images, T=10, k=4 cross; public patches and aux from the other LFW half."""
    priv = load_source("lfw[0::2]").subset(np.r_[0:12, 38:50])
    aux = load_source(AUX)
    view, key = encrypt(priv.images, priv.labels, len(priv.classes), EncryptionConfig(k=4, T=T), seed=3,
                        public_patches=aux.images[::-1], class_names=priv.classes)
    return view, key, aux


def _check_assignment(g: Grouping, view: PublicView):
    A = g.assignment
    assert A.shape == (len(view), view.n_private_slots) and A.dtype == np.int64
    assert A.min() >= 0 and A.max() < g.n_clusters == view.n_private
    assert np.all(A[:, 0] != A[:, 1])
    known = g.cluster_class >= 0
    # Label support: an encryption only joins groups whose class its label holds.
    support = view.labels > 0
    for col in range(A.shape[1]):
        c = A[:, col]
        ok = known[c]
        assert support[np.flatnonzero(ok), g.cluster_class[c[ok]]].all()


def test_config_validation():
    with pytest.raises(HidebenchError, match=r"unknown key\(s\) carlini\.similarity\.methd"):
        CarliniConfig.from_dict({"similarity": {"methd": "cnn"}})
    with pytest.raises(HidebenchError, match="method"):
        SimilarityConfig(method="wrn")
    with pytest.raises(HidebenchError, match="embedder.steps"):
        SimilarityConfig.from_dict({"embedder": {"steps": -1}})
    with pytest.raises(HidebenchError, match="max_overlap"):
        ClusteringConfig(max_overlap=1.5)
    with pytest.raises(HidebenchError, match="device"):          # device, threads, seed: the context's
        CarliniConfig.from_dict({"similarity": {"device": "cpu"}})
    # no default depends on the hardware
    assert SimilarityConfig().width == 16 and SimilarityConfig().embedder.steps == 600


def test_bad_input_errors(release):
    view, key, aux = release
    no_t = dataclasses.replace(view, T=None)
    with pytest.raises(HidebenchError, match="T"):
        run_grouping(no_t, {"similarity": {"method": "pearson"}})
    zero = dataclasses.replace(view, labels=view.labels.copy())
    zero.labels[3] = 0
    with pytest.raises(HidebenchError, match="all-zero label"):
        run_grouping(zero, {"similarity": {"method": "pearson"}})
    with pytest.raises(HidebenchError, match="auxiliary"):
        run_grouping(view, {"similarity": {"method": "cnn"}}, aux=None)


def test_pearson_grouping_beats_chance(release):
    view, key, aux = release
    g, _ = run_grouping(view, {"similarity": {"method": "pearson"}})
    _check_assignment(g, view)
    m = evaluate_grouping(g, key)
    assert m["pair_auc"] > 0.55
    assert m["precision_at_T"] > 2 * m["pair_base_rate"]
    # Random assignment gets a slot right with chance ~ 2 / N_PRIV (~0.17).
    assert m["assignment_accuracy"] > 0.25


def test_cnn_similarity_separates_pairs_and_caches(release, tmp_path):
    view, key, aux = release
    cfg = {"similarity": {"width": 8, "batch_size": 128, "embedder": {"steps": 40, "dim": 32},
                          "rounds": {"images": 60, "T": 6, "steps": 20}, "group": {"steps": 0}}, "eval_anchors": 120}
    g, run = run_grouping(view, cfg, aux=AUX, seed=1, cache_dir=tmp_path)
    _check_assignment(g, view)
    m = evaluate_grouping(g, key)
    assert m["pair_auc"] > 0.55
    assert m["precision_at_T"] > 1.5 * m["pair_base_rate"]
    assert run.hits == {"similarity_model": False, "grouping": False}
    again, run2 = run_grouping(view, cfg, aux=AUX, seed=1, cache_dir=tmp_path)
    assert run2.hits == {"similarity_model": True, "grouping": True}
    np.testing.assert_array_equal(again.assignment, g.assignment)
    # retraining the model (what --stages similarity_model asks) gives the same weights, so the
    # grouping downstream of it stays cached
    ctx = ExecutionContext(device="cpu", progress=False, seed=1, cache_dir=tmp_path, recompute=("similarity_model",))
    inp = AttackInputs(view, CarliniConfig.from_dict(cfg), ctx, check_release(view),
                       threat=ReleaseThreatModel(aux=AUX, public_pool=False))
    run3 = run_pipeline(STAGES[:2], inp, ctx.stage_cache())
    assert run3.hits == {"similarity_model": False, "grouping": True}


@pytest.mark.parametrize("clustering", ["greedy", "spectral"])
def test_oracle_pairs_recover_groups(release, clustering):
    view, key, aux = release
    g, run = run_grouping(view, {"clustering": {"method": clustering}}, pairs_key=key)
    assert "similarity_model" not in run.outputs
    _check_assignment(g, view)
    m = evaluate_grouping(g, key)
    assert m["pair_auc"] == 1.0 and m["precision_at_T"] == 1.0
    assert m["core_purity"] > 0.95
    # Tiny release (24 images, cores of 4): a duplicate or two cost a few percent.
    assert m["assignment_accuracy"] > 0.75
    assert m["class_accuracy"] > 0.9


def test_greedy_assignment_variant(release):
    view, key, aux = release
    g, _ = run_grouping(view, {"assignment": {"method": "greedy"}}, pairs_key=key)
    _check_assignment(g, view)
    assert evaluate_grouping(g, key)["assignment_accuracy"] > 0.8


def planted_pairs(rng, E: int = 60, C: int = 6):
    """E rows, C groups, two distinct true groups per row (each group in 2E/C rows) scoring 1
    above N(0, 0.05) noise: (truth E x 2, scores E x C, allowed all True)."""
    truth = np.stack([np.arange(E) % C, (np.arange(E) + 1 + np.arange(E) // C % (C - 1)) % C], 1)
    scores = rng.normal(0, 0.05, (E, C))
    scores[np.arange(E)[:, None], truth] += 1.0
    return truth, scores, np.ones((E, C), dtype=bool)


def test_flow_respects_capacity_and_two_groups():
    rng = np.random.default_rng(0)
    E, C = 60, 6
    truth, scores, allowed = planted_pairs(rng, E, C)
    out, stats = asg.flow_assign(scores, allowed, slots=2, capacity=2 * E // C, candidates=3)
    assert out.shape == (E, 2) and np.all(out[:, 0] != out[:, 1])
    assert np.bincount(out.ravel(), minlength=C).max() <= 2 * E // C + stats["overflow_units"]
    np.testing.assert_array_equal(np.sort(out, 1), np.sort(truth, 1))
    # A row allowed in fewer than two groups still gets two (the best disallowed fills in).
    allowed[0] = False
    allowed[0, truth[0, 0]] = True
    out2, stats2 = asg.flow_assign(scores, allowed, slots=2, capacity=2 * E // C, candidates=3)
    assert len(set(out2[0])) == 2 and truth[0, 0] in out2[0]
    assert stats2["disallowed_used"] == 1


def test_greedy_top_assignment_rows_exact():
    rng = np.random.default_rng(1)
    scores = rng.random((50, 5))
    out, _ = asg.greedy_assign(scores, np.ones((50, 5), dtype=bool), slots=2, per_group=8)
    assert out.shape == (50, 2) and np.all(out[:, 0] != out[:, 1])


def test_complete_clusters_fills_to_n():
    rng = np.random.default_rng(2)
    S = rng.random((40, 40)).astype(np.float32)
    S = (S + S.T) / 2
    np.fill_diagonal(S, -2)
    support = np.ones((40, 2), dtype=bool)
    groups, added = clu.complete_clusters(S, support, [np.arange(5)], 4, size=4, candidates=10, linkage="mean")
    assert len(groups) == 4 and added == 3
    groups, added = clu.complete_clusters(S, support, [], 3, size=4, candidates=10, linkage="min")
    assert len(groups) == 3 and all(len(g) == 4 for g in groups)
    many = [np.arange(i, i + 4) for i in range(0, 36, 4)]
    assert len(clu.complete_clusters(S, support, many, 5, size=4, candidates=10, linkage="mean")[0]) == 5


def test_evaluate_perfect_grouping(release):
    view, key, aux = release
    A = key.private_of().astype(np.int64)
    g = Grouping(assignment=A, cluster_class=key.private_labels.copy(), n_clusters=N_PRIV)
    m = evaluate_grouping(g, key)
    assert m["assignment_accuracy"] == 1.0 and m["rows_all_correct"] == 1.0
    assert m["group_purity"] == 1.0 and m["group_recall"] == 1.0 and m["class_accuracy"] == 1.0
    # A relabelled grouping scores the same (groups are matched to images).
    perm = np.random.default_rng(0).permutation(N_PRIV)
    g2 = Grouping(assignment=perm[A], cluster_class=np.empty(N_PRIV, np.int64), n_clusters=N_PRIV)
    g2.cluster_class[perm] = key.private_labels
    assert evaluate_grouping(g2, key)["assignment_accuracy"] == 1.0


def test_pairwise_rerank_option(release, tmp_path):
    """The paper's 6-channel pair model as a reranker: trained with the embedding, it rescores
    each encryption's candidates (symmetrically, nothing else) and keeps the contract."""
    from hidebench.attacks.grouping.similarity import SimilarityModel, release_similarity
    from hidebench.stage_cache import StageCache

    view, key, aux = release
    cfg = {"similarity": {"width": 4, "batch_size": 64, "blend": 0.5, "embedder": {"steps": 10, "dim": 16},
                          "rounds": {"images": 40, "T": 4, "steps": 10}, "pair": {"rerank": 6, "steps": 10},
                          "group": {"steps": 0}}}
    g, run = run_grouping(view, cfg, aux=AUX, cache_dir=tmp_path)
    _check_assignment(g, view)
    model = run.outputs["similarity_model"]
    assert isinstance(model, SimilarityModel) and len(model.loss_pair) == 10
    with np.load(tmp_path / "similarity_model" / "arrays.npz") as z:
        assert any(k.startswith("weights.pair.") for k in z.files)
    sim = CarliniConfig.from_dict(cfg).similarity
    S = release_similarity(view, sim, model)
    S0 = release_similarity(view, dataclasses.replace(sim, pair=dataclasses.replace(sim.pair, rerank=0)), model)
    changed = S != S0
    assert changed.any() and np.array_equal(S, S.T)
    cand = clu.top_neighbours(S0, 6)
    pairs = np.zeros_like(changed)
    pairs[np.arange(len(S))[:, None], cand] = True
    assert not (changed & ~(pairs | pairs.T)).any()          # only candidate pairs are rescored
    assert StageCache(tmp_path).manifest("grouping") is not None


def test_group_model_option(release, tmp_path):
    """similarity.group.steps trains the second graph's group model with the embedding (cached
    with it); the grouping then rescores and reassigns group.passes times and keeps the contract."""
    view, key, aux = release
    cfg = {"similarity": {"width": 4, "batch_size": 64, "blend": 0.5, "embedder": {"steps": 10, "dim": 16},
                          "rounds": {"images": 40, "T": 4, "steps": 10}, "group": {"steps": 10, "passes": 2}}}
    g, run = run_grouping(view, cfg, aux=AUX, cache_dir=tmp_path)
    _check_assignment(g, view)
    assert len(run.outputs["similarity_model"].loss_group) == 10
    assert len(g.stats["group_model_changed_fraction"]) == 2
    with np.load(tmp_path / "similarity_model" / "arrays.npz") as z:
        assert any(k.startswith("weights.group.") for k in z.files)


def test_flow_one_group_per_labelled_class():
    """A label naming two classes gets one group of each, even when two groups of one class score higher."""
    E, C = 12, 4
    classes = np.array([0, 0, 1, 1])
    scores = np.full((E, C), 0.1)
    scores[:, 0], scores[:, 1], scores[:, 2] = 0.9, 0.8, 0.3      # both class-0 groups look best
    support = np.zeros((E, 2), dtype=bool)
    support[:, 0] = True
    support[: E // 2, 1] = True                                     # half the rows hold a class-1 image
    weights = support * np.array([0.6, 0.3])
    sc = asg.slot_classes(support, weights, classes, 2)
    assert (sc[: E // 2] == [0, 1]).all() and (sc[E // 2:] == -1).all()
    allowed = asg.allowed_matrix(support, classes)
    out, stats = asg.flow_assign(scores, allowed, slots=2, capacity=E, candidates=4, slot_class=sc, classes=classes)
    assert stats["rows_one_group_per_class"] == E // 2
    np.testing.assert_array_equal(classes[out[: E // 2]], np.tile([0, 1], (E // 2, 1)))
    np.testing.assert_array_equal(np.sort(out[E // 2:], 1), np.tile([0, 1], (E - E // 2, 1)))


def test_self_training_option(release, tmp_path):
    """similarity.self_training fine-tunes the CNN on the release's own grouping and groups
    again: each round's statistics are recorded, the grouping keeps the contract, and the
    confident members are the ones nearest their group's mean."""
    from hidebench.attacks.grouping.self_training import changed_fraction, confident_members

    view, key, aux = release
    cfg = {"similarity": {"width": 4, "batch_size": 64, "blend": 0.5, "embedder": {"steps": 10, "dim": 16},
                          "rounds": {"images": 40, "T": 4, "steps": 10}, "group": {"steps": 0},
                          "self_training": {"rounds": 2, "steps": 6, "attacker_rounds": 2, "min_change": 0.0}}}
    g, run = run_grouping(view, cfg, aux=AUX, cache_dir=tmp_path)
    _check_assignment(g, view)
    hist = g.stats["self_training"]
    assert len(hist) == 2 and all(0 <= h["changed_fraction"] <= 1 and h["confident_members"] > 0 for h in hist)
    # relabelling the groups changes nothing
    perm = np.random.default_rng(0).permutation(g.n_clusters)
    assert changed_fraction(g.assignment, perm[g.assignment], g.n_clusters) == 0.0
    # two groups of three on the unit circle, each with one outlier: the outliers are dropped
    z = np.array([[1, 0], [0.99, 0.14], [0, 1], [-1, 0], [-0.99, -0.14], [0, -1]], np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    A = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0]])
    conf = confident_members(z, A[:, :1], 2, keep=0.6)
    assert conf[:, 0].tolist() == [True, True, False, False, False, False]
    assert conf[:, 1].tolist() == [False, False, False, True, True, False]


def test_similarity_model_is_reused_across_releases_from_the_model_cache(release, tmp_path):
    """The trained similarity depends on the scheme, T, aux data, config and seed, not on the
    release's encryptions: a second release of the same scheme loads it from the model cache
    (no training) and gets the same weights."""
    from hidebench.attacks.grouping.similarity import SimilarityModel
    from hidebench.model_cache import ModelCache

    view, key, aux = release
    cfg = {"similarity": {"width": 4, "batch_size": 64, "blend": 0.5, "embedder": {"steps": 10, "dim": 16},
                          "rounds": {"images": 40, "T": 4, "steps": 10}, "group": {"steps": 0}}}
    _, first = run_grouping(view, cfg, aux=AUX, cache_dir=tmp_path / "a", model_dir=tmp_path / "models")
    other = PublicView(view.encryptions[::-1].copy(), view.labels[::-1].copy(), view.k, view.mode, view.scheme,
                       T=view.T)
    calls = []
    import hidebench.attacks.grouping.stages as st

    original = st.train_similarity_model
    st.train_similarity_model = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        _, second = run_grouping(other, cfg, aux=AUX, cache_dir=tmp_path / "b", model_dir=tmp_path / "models")
    finally:
        st.train_similarity_model = original
    assert not calls, "the similarity model was trained again"
    assert [e["name"] for e in ModelCache(tmp_path / "models").entries()] == ["similarity"]
    a, b = first.outputs["similarity_model"], second.outputs["similarity_model"]
    assert isinstance(b, SimilarityModel) and b.blend == a.blend
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_decryption_shows_the_group_the_grouping_is_surest_of(release):
    """shown_groups: the grouping's best-scoring group (here as often right as the heavier slot's;
    on the measured releases more often, docs/results.md); a later stage's rows that dropped it
    show their heavier slot."""
    view, key, aux = release
    g, _ = run_grouping(view, {"similarity": {"method": "pearson"}})
    shown = shown_groups(g)
    assert np.array_equal(shown, g.assignment[:, 0])
    to_private = np.asarray(evaluate_grouping(g, key)["cluster_to_private"])
    held = key.private_of()
    lam, _ = lambdas_from_labels(view.labels, g.assignment, g.cluster_class)
    heavier = g.assignment[np.arange(len(view)), lam.argmax(1)]
    right = lambda groups: (to_private[groups][:, None] == held).any(1).mean()   # noqa: E731
    assert right(shown) >= right(heavier) and right(shown) > 0.5
    # After a reassignment: rows still holding slot 0 show it, the others their heavier slot.
    later = g.assignment.copy()
    later[::3, 0] = (later[::3, 0] + 1 + (later[::3, 0] + 1 == later[::3, 1])) % g.n_clusters
    later_lam = np.tile([0.2, 0.4], (len(view), 1))
    s = shown_groups(g, later, later_lam)
    kept = (later == g.assignment[:, :1]).any(1)
    assert np.array_equal(s[kept], g.assignment[kept, 0]) and np.array_equal(s[~kept], later[~kept, 1])
    # Under the 'assignment' oracle every slot is right: slot 0 is the heavier by the labels.
    o = oracle_grouping(Membership(held, N_PRIV, key.private_labels), view)
    lam_o, _ = lambdas_from_labels(view.labels, o.assignment, o.cluster_class)
    assert (lam_o[:, 0] >= lam_o[:, 1]).all() and np.array_equal(np.sort(o.assignment, 1), np.sort(held, 1))
