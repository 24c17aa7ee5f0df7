"""fdn (Luo et al., AAAI 2022) on tiny cases: the comparative network's score is a dot product of
embeddings, the fusion network ignores the order of a group's members, a short training beats
the plain mixture of a group and the identity floor, the run records the grouping's and the
fusion's figures, models are reused, carlini recovers by fusion, bad config is one clear error,
`hidebench demo` runs end to end."""
import json

import numpy as np
import pytest
import torch

from hidebench.app.cli import main
from hidebench.app.harness import run_release_attack
from hidebench.context import ExecutionContext
from hidebench.defenses.challenge import generate_to_dir
from hidebench.recipes import load_recipe
from hidebench.stock import load_preset
from hidebench.threat import ReleaseThreatModel
from hidebench.types import HidebenchError

CTX = ExecutionContext(device="cpu", progress=False, seed=0)
TINY = load_preset("fdn", "tiny")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """One model cache for the module: a fusion network trained by one test is reused by the next."""
    return CTX.replace(model_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """10 faces, T=8, k=6 cross, every private image cropped and flipped afresh per encryption."""
    d = tmp_path_factory.mktemp("fdn") / "ch"
    generate_to_dir(load_recipe("faces", {"n_priv": 10, "T": 8, "pool_screen": 60, "augment": True}), d,
                    progress=False)
    return d


def test_comparative_score_is_the_dot_product_of_embeddings():
    from hidebench.attacks.grouping.nets import build_comparative

    torch.manual_seed(0)
    net = build_comparative(8, 1, 4)
    with torch.no_grad():
        net.channel_logits.normal_()
    net.eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        g = net(x)
        maps, w = net.channel_maps(x), net.channel_weights()
        f = net.pool(net.trunk(x)).flatten(2)                          # the paper's form, pair by pair
        f = f - f.mean(2, keepdim=True)
        score = torch.stack([torch.stack([(w * torch.nn.functional.cosine_similarity(f[i], f[j], dim=1)).sum()
                                          for j in range(5)]) for i in range(5)])
    assert torch.all(w >= 0) and abs(float(w.sum()) - 1) < 1e-6
    assert torch.allclose(maps.norm(dim=2), torch.ones(5, 8), atol=1e-5)
    assert torch.allclose(g @ g.T, score, atol=1e-5)
    assert torch.allclose(g.norm(dim=1), torch.ones(5), atol=1e-5)


def test_fusion_network_ignores_member_order_and_packing():
    from hidebench.attacks.fdn.nets import FusionNet

    sizes = [3, 1, 5]
    group = torch.as_tensor(np.repeat(np.arange(3), sizes))
    x, coef = torch.rand(len(group), 3, 32, 32), torch.rand(len(group)) * 0.5 + 0.1
    other, cond = 0.5 - coef / 2, torch.eye(3)
    perm = torch.as_tensor(np.random.default_rng(1).permutation(len(group)))
    with torch.no_grad():
        for register in (False, True):
            torch.manual_seed(0)
            net = FusionNet(3, features=4, width=8, depth=2, register=register).eval()
            a, logits = net(x, coef, other, group, cond)
            b, _ = net(x[perm], coef[perm], other[perm], group[perm], cond)       # members shuffled across the packing
            one, _ = net(x[group == 2], coef[group == 2], other[group == 2], torch.zeros(5, dtype=torch.int64),
                         cond[2:])                                                  # a group alone
            assert a.shape == (3, 3, 32, 32) and a.abs().max() <= 1
            assert torch.allclose(a, b, atol=1e-5)
            assert torch.allclose(a[2:], one, atol=1e-5)
            assert (logits is None) != register and (not register or logits[0].shape == (9, 9))


def test_short_training_beats_the_mixture_and_the_floor():
    """A fusion network (with registration) trained 150 steps on simulated augmented groups
    restores held-out simulated groups better than the groups' mean |e| / l (the mixture) and
    than |e| itself."""
    from hidebench.attacks.attacker_data import AttackerEncryptions
    from hidebench.attacks.fdn.config import FusionConfig
    from hidebench.attacks.fdn.groups import GroupSampler
    from hidebench.attacks.fdn.nets import FusionNet
    from hidebench.attacks.fdn.training import to_device, train_fusion
    from hidebench.attacks.identity import rescaled_abs
    from hidebench.data import load_source
    from hidebench.metrics import ssim
    from hidebench.types import PublicView

    aux = load_source("lfw[1::2]")
    view = PublicView(np.zeros((16, 32, 32, 3), np.float32), np.eye(2, dtype=np.float32)[np.arange(16) % 2], 6,
                      "cross", "instahide", T=8, augment=True)
    cfg = FusionConfig.from_dict({"net": {"features": 8, "width": 8, "depth": 2},
                                  "training": {"steps": 150, "batch_size": 4, "epoch_steps": 50},
                                  "groups": {"round_images": 30, "wrong_max": 0.3}})
    train_aux, test_aux = aux.subset(np.arange(0, 70)), aux.subset(np.arange(70, len(aux)))
    torch.manual_seed(0)
    net = FusionNet(2, features=8, width=8, depth=2, register=True)
    sampler = GroupSampler(AttackerEncryptions(view, train_aux, n_images=30, T=8, seed=1), cfg.groups, 8, 1)
    curves = train_fusion(net, sampler, cfg, 2, device=torch.device("cpu"), seed=0, progress=False)
    assert curves["loss"][-1] < curves["loss"][0]
    assert curves["shift_loss"][-1] < curves["shift_loss"][0] and curves["shift_accuracy"][-1] > 1 / 81
    held = GroupSampler(AttackerEncryptions(view, test_aux, n_images=30, T=8, seed=2), cfg.groups, 8, 2).draw(24)
    with torch.no_grad():
        out = net.eval()(*to_device(held.abs_enc, held.groups, 2, torch.device("cpu")))[0].permute(0, 2, 3, 1).numpy()
    g = held.groups
    ratio = held.abs_enc[g.rows] / g.coef[:, None, None, None]
    mixture = np.stack([ratio[g.group == b].mean(0) for b in range(g.n_groups)])
    first = np.stack([held.abs_enc[g.rows][g.group == b][0] for b in range(g.n_groups)])
    fused, mixed, floor = (float(ssim(x, held.targets).mean()) for x in (out, rescaled_abs(mixture), rescaled_abs(first)))
    print(fused, mixed, floor, curves)
    assert fused > mixed + 0.1 and fused > floor + 0.1, (fused, mixed, floor)


def test_run_records_grouping_and_fusion_figures_and_reuses_the_model(faces, tmp_path, ctx):
    a = run_release_attack("fdn", faces, tmp_path / "a", config=TINY, ctx=ctx)
    st = a.metrics["stages"]
    assert 0 <= st["grouping"]["pair_auc"] <= 1 and 0 <= st["grouping"]["assignment_accuracy"] <= 1
    assert 0 <= st["similarity_network"]["pair_auc"] <= 1 and "precision_at_T" in st["similarity_network"]
    assert st["fusion"]["ssim_by_size"] and st["fusion"]["ssim_by_purity"]
    assert sum(b["groups"] for b in st["fusion"]["ssim_by_size"].values()) == 10
    assert a.stats["fusion"]["model"] and not a.stats["fusion"]["cached"] and a.stats["fusion"]["curves"]["loss"]
    assert a.stats["similarity_model"]["embed_loss_first_last"] and a.stats["similarity_model"]["train_s"]["comparative"] > 0
    assert np.load(tmp_path / "a" / "recovered.npy").shape == (10, 32, 32, 3)
    # a new run folder (no stage cache): the fusion network comes from the model cache
    b = run_release_attack("fdn", faces, tmp_path / "b", config=TINY, ctx=ctx)
    assert b.stats["fusion"]["cached"] and b.stats["fusion"]["model"] == a.stats["fusion"]["model"]
    assert b.metrics["challenge"] == a.metrics["challenge"]
    # with the true grouping (an ablation) the groups are pure, and the fusion does at least as well
    o = run_release_attack("fdn", faces, tmp_path / "o", config=TINY, ctx=ctx,
                           threat=ReleaseThreatModel(oracles=("assignment",)))
    assert o.metrics["stages"]["grouping"]["assignment_accuracy"] == 1.0
    assert o.metrics["stages"]["fusion"]["mean_purity"] == 1.0
    assert "similarity_model" not in o.stats
    assert o.metrics["stages"]["fusion"]["ssim"] > a.metrics["stages"]["fusion"]["ssim"] - 0.02


def test_carlini_recovers_by_fusion_from_the_cli(faces, tmp_path, ctx):
    cfg = {**load_preset("carlini", "tiny"), "fusion": TINY["fusion"]}
    del cfg["regression"], cfg["reassignment"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    common = ["--challenge", str(faces), "--seed", "0", "--device", "cpu", "--quiet", "--model-dir", ctx.model_dir]
    assert main(["attack", "identity", "--out", str(tmp_path / "id"), *common]) == 0
    assert main(["attack", "carlini", "--out", str(tmp_path / "cf"), "--config", str(tmp_path / "cfg.json"),
                 "--set", "recovery=fusion", *common]) == 0
    rec = json.loads((tmp_path / "cf" / "record.json").read_text())
    floor = json.loads((tmp_path / "id" / "record.json").read_text())["metrics"]["challenge"]["Max_SSIM"]
    assert rec["config"]["recovery"] == "fusion" and "regression" not in rec["stats"]
    assert set(rec["metrics"]["stages"]) == {"grouping", "fusion"}
    assert rec["metrics"]["challenge"]["Max_SSIM"] > floor + 0.05
    assert set(rec["stats"]["cache_hits"]) == {"grouping", "fusion"}       # pearson: no similarity model


@pytest.mark.parametrize("config, match", [
    ({"fusion": {"net": {"featurs": 8}}}, r"fdn\.fusion\.net\.featurs"),
    ({"grouping": {"similarity": {"comparative": {"gird": 2}}}}, r"fdn\.grouping\.similarity\.comparative\.gird"),
    ({"fusion": {"groups": {"wrong_max": 1.0}}}, "wrong_max"),
    ({"fusion": {"groups": {"size_min": 2.0, "size_max": 1.0}}}, "size_max"),
    ({"fusion": {"training": {"steps": 0}}}, "fusion.training.steps"),
    ({"grouping": {"similarity": {"method": "siamese"}}}, "similarity.method"),
])
def test_bad_config_is_one_clear_error(config, match):
    from hidebench.attacks.fdn.config import FdnConfig

    with pytest.raises(HidebenchError, match=match):
        FdnConfig.from_dict(config)


def test_defaults_and_carlini_config():
    from hidebench.attacks.carlini.config import CarliniConfig
    from hidebench.attacks.fdn.config import FdnConfig

    c = FdnConfig.from_dict({"grouping": {"similarity": {"width": 8}}})      # a partial section keeps fdn's defaults
    assert c.grouping.similarity.method == "comparative" and c.grouping.similarity.rounds.pool_draws == 8
    demo = FdnConfig.from_dict(load_preset("fdn", "demo"))     # `hidebench demo`'s shorter training, defaults elsewhere
    assert (demo.grouping.similarity.comparative.steps, demo.grouping.similarity.group.steps,
            demo.fusion.training.steps) == (300, 0, 900)
    assert demo.grouping.similarity.comparative.width == c.grouping.similarity.comparative.width
    assert CarliniConfig().recovery == "regression" and CarliniConfig().similarity.method == "cnn"
    with pytest.raises(HidebenchError, match="carlini.recovery"):
        CarliniConfig.from_dict({"recovery": "denoise"})
    with pytest.raises(HidebenchError, match="recovery = 'fusion'"):
        CarliniConfig.from_dict({"fusion": {"training": {"steps": 5}}})
    with pytest.raises(HidebenchError, match=r"carlini\.fusion\.net\.widht"):
        CarliniConfig.from_dict({"recovery": "fusion", "fusion": {"net": {"widht": 5}}})


def test_bad_input_is_one_clear_error(faces, tmp_path, ctx):
    with pytest.raises(HidebenchError, match="auxiliary images"):
        run_release_attack("fdn", faces, tmp_path / "x", config=TINY, ctx=ctx, threat=ReleaseThreatModel(aux=None))
    with pytest.raises(HidebenchError, match="cannot use oracle"):
        run_release_attack("fdn", faces, tmp_path / "y", config=TINY, ctx=ctx,
                           threat=ReleaseThreatModel(oracles=("lambdas",)))
    with pytest.raises(HidebenchError, match="members a group"):
        run_release_attack("fdn", faces, tmp_path / "z", ctx=ctx, config={**TINY, "fusion": {
            **TINY["fusion"], "groups": {"size_max": 500.0}}})


def test_shift_back_undoes_the_augmentation_shift():
    from hidebench.attacks.fdn.nets import shift_back
    from hidebench.defenses.augment import shift_flip

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    params = np.stack([rng.integers(-4, 5, 6), rng.integers(-4, 5, 6), np.zeros(6, int)], 1)
    views = torch.as_tensor(shift_flip(x, params)).permute(0, 3, 1, 2)
    back = shift_back(views, torch.as_tensor(params[:, 0]), torch.as_tensor(params[:, 1])).permute(0, 2, 3, 1).numpy()
    for i, (dy, dx, _) in enumerate(params):          # equal where the view kept the image's pixels
        keep = (slice(max(0, dy), 32 + min(0, dy)), slice(max(0, dx), 32 + min(0, dx)))
        assert np.array_equal(back[i][keep], x[i][keep])
        assert np.count_nonzero(np.abs(back[i]).sum(-1)) <= (32 - abs(dy)) * (32 - abs(dx))


def test_demo_runs_the_floor_and_fdn_and_draws_the_recoveries(tmp_path, ctx, monkeypatch):
    """`hidebench demo` end to end on a small faces release (its fdn preset swapped for the tiny
    one): both records, the fusion above the identity floor, demo.png written."""
    import hidebench.stock
    from hidebench.app.demo import ATTACK, run_demo

    generate_to_dir(load_recipe("faces", {"n_priv": 10, "T": 8, "pool_screen": 60}), tmp_path / "demo" / "challenge",
                    progress=False)
    monkeypatch.setattr(hidebench.stock, "load_preset", lambda attack, name: TINY if (attack, name) == ("fdn", "demo")
                        else pytest.fail(f"unexpected preset {attack}/{name}"))
    records = run_demo(tmp_path / "demo", ctx)
    assert set(records) == {"identity", ATTACK} == {"identity", "fdn"}
    score = {name: r.metrics["challenge"]["Max_SSIM"] for name, r in records.items()}
    assert score["fdn"] > score["identity"] + 0.1
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
