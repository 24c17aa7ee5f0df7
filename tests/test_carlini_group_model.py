"""The second graph of the Carlini attack (group_model.py): an encryption scored against a
whole group's template."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.grouping.group_model import ROUND_IMAGES, group_rescorer, train_group_model, training_batch
from hidebench.attacks.grouping.membership import membership_matrix
from hidebench.attacks.grouping.nets import abs_features, state_to_arrays
from hidebench.data import load_source
from hidebench.defenses.instahide import EncryptionConfig, encrypt


def _synthetic_round(rng, n=12, per=10, classes=3):
    """Rows holding two of n images, each image a distinct random pattern: x = sum + noise."""
    patterns = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    ids = np.array([rng.choice(n, 2, replace=False) for _ in range(n * per // 2)])
    x = patterns[ids].sum(1) + 0.5 * rng.normal(size=(len(ids), 3, 32, 32)).astype(np.float32)
    return patterns, x, membership_matrix(ids, n), np.arange(n) % classes


def test_training_batch_templates_and_targets():
    """Targets say whether the candidate holds the image; each template shows its own image
    (correlates with its pattern far more than with the others'); half the pairs are positive."""
    rng = np.random.default_rng(0)
    patterns, x, member, classes = _synthetic_round(rng)
    images, cand, tmpl, y = training_batch(rng, x, member, classes, 400)
    assert np.array_equal(y, member[cand, images])
    assert 0.4 < y.mean() < 0.6
    assert np.allclose(tmpl.mean(axis=(1, 2, 3)), 0, atol=1e-4) and np.allclose(tmpl.std(axis=(1, 2, 3)), 1, atol=1e-3)
    p = patterns.reshape(len(patterns), -1)
    corr = tmpl.reshape(len(tmpl), -1) @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    assert np.mean(corr.argmax(1) == images) > 0.95


@pytest.fixture(scope="module")
def attacker_rounds():
    priv = load_source("lfw[0::2]")
    aux = load_source("lfw[1::2]")
    view, _ = encrypt(priv.images[:12], priv.labels[:12], len(priv.classes), EncryptionConfig(k=4, T=10), seed=3,
                      public_patches=aux.images[::-1], class_names=priv.classes)
    return AttackerEncryptions(view, aux, n_images=ROUND_IMAGES, T=10, seed=1)


def test_group_model_learns_membership(attacker_rounds):
    """After 150 steps on the attacker's own rounds, the model tells an image's encryptions from
    others against the image's (impure) template on a fresh round: AUC well above chance."""
    import torch

    model, losses = train_group_model(attacker_rounds, width=8, steps=150, batch=64, lr=3e-3, steps_per_round=50,
                                      device=torch.device("cpu"), seed=0)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    idx = np.arange(ROUND_IMAGES)
    view, key = attacker_rounds.encrypt_subset(idx)
    x = abs_features(view.encryptions)
    rng = np.random.default_rng(5)
    _, cand, tmpl, y = training_batch(rng, x, membership_matrix(key.private_of(), len(idx)),
                                      attacker_rounds.aux.labels[idx], 400)
    with torch.no_grad():
        logit = model(torch.from_numpy(np.concatenate([x[cand], tmpl], 1))).squeeze(1).numpy()
    assert roc_auc_score(y, logit) > 0.7


def test_rescorer_changes_only_each_rows_candidates(attacker_rounds):
    """The rescoring touches each row's `candidates` best allowed groups and nothing else."""
    import torch

    from hidebench.attacks.grouping.nets import build_pair_model

    torch.manual_seed(0)
    weights = state_to_arrays(build_pair_model(4), "group.")
    view, key = attacker_rounds.encrypt_subset(np.arange(20))
    A = key.private_of()
    rng = np.random.default_rng(0)
    scores = rng.random((len(A), 20)).astype(np.float32)
    allowed = rng.random((len(A), 20)) < 0.7
    rescore = group_rescorer(view.encryptions, weights, width=4, candidates=3, weight=1.0)
    new = rescore(A, scores, allowed)
    changed = new != scores
    top = np.argsort(-np.where(allowed, scores, scores - 1e6), 1)[:, :3]
    mask = np.zeros_like(changed)
    mask[np.arange(len(A))[:, None], top] = True
    assert changed.any() and not (changed & ~mask).any()
