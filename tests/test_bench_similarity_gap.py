"""benchmarks/similarity_gap.py's release probes on a synthetic embedding: the region columns
tell a score that sees only the private images from one that also sees the public regions."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def gap(benchmark_script):
    return benchmark_script("similarity_gap")


def test_region_probes_separate_private_and_region_scores(gap):
    rng = np.random.default_rng(0)
    n, n_regions, E = 8, 5, 60
    private = np.stack([rng.permutation(n)[:2] for _ in range(E)])
    regions = rng.integers(0, n_regions, size=(E, 4))
    one_hot = lambda ids, m: np.eye(m, dtype=np.float32)[ids].sum(1)     # noqa: E731

    def embedder(region_weight):
        z = np.concatenate([one_hot(private, n), region_weight * one_hot(regions, n_regions)], axis=1)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    assert gap.shares(private, n).sum() > E and np.array_equal(gap.shares(private, n), gap.shares(private, n).T)
    assert gap.pair_auc(embedder(0.0), private, n) == 1.0
    clean, region_auc = gap.region_aucs(embedder(0.0), private, n, regions)
    assert clean == 1.0 and region_auc == 0.5            # the score ignores the regions
    confounded = gap.pair_auc(embedder(1.0), private, n)
    clean, region_auc = gap.region_aucs(embedder(1.0), private, n, regions)
    assert region_auc > 0.9 and clean > confounded        # it also scores regions: leaving them out helps
