"""Intra-class FID (harness.metrics.class_fid) against per-class FIDs computed with numpy
and scipy.linalg.sqrtm on synthetic features with known labels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from harness.metrics.bootstrap import Bootstrap
from harness.metrics.class_fid import class_fid, class_fid_replicates, class_statistics

F = 4
CLASSES = 3


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Heusel et al. 2017: |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 sqrtm(S_x S_y)), unbiased
    covariances (numpy's default ddof for np.cov is 1)."""
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(sx @ sy).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * root))


def features(counts, seed, spread=1.0):
    """Class c: Gaussian features with mean 3c along every axis and a class-specific
    covariance (the same for every seed; scaled by `spread`); labels in blocks, then
    shuffled."""
    gen, fixed = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(100)
    xs, labels = [], []
    for c, n in enumerate(counts):
        mix = torch.eye(F, dtype=torch.float64) + 0.3 * (c + 1) * torch.randn(
            F, F, generator=fixed, dtype=torch.float64)
        xs.append(3.0 * c + spread * torch.randn(n, F, generator=gen, dtype=torch.float64)
                  @ mix)
        labels.append(torch.full((n,), c, dtype=torch.int64))
    order = torch.randperm(sum(counts), generator=gen)
    return torch.cat(xs)[order], torch.cat(labels)[order]


@pytest.fixture(scope="module")
def reference():
    x, labels = features([300, 250, 200], seed=0)
    return x, labels, class_statistics(x, labels, "ref", "identity")


def test_per_class_fids_and_their_mean_match_scipy(reference):
    ref_x, ref_labels, stats = reference
    gen_x, gen_labels = features([120, 150, 90], seed=1, spread=1.2)
    result = class_fid(gen_x, gen_labels, stats)
    expected = {c: scipy_fid(gen_x[gen_labels == c].numpy(), ref_x[ref_labels == c].numpy())
                for c in range(CLASSES)}
    assert set(result.per_class) == set(expected)
    for c in expected:
        assert result.per_class[c] == pytest.approx(expected[c], rel=1e-8, abs=1e-10)
    assert result.mean == pytest.approx(sum(expected.values()) / CLASSES, rel=1e-8)
    assert result.generated_counts == {0: 120, 1: 150, 2: 90}
    assert result.reference_counts == {0: 300, 1: 250, 2: 200}
    assert result.missing == {} and result.rank_deficient == []
    assert min(expected.values()) > 0.01  # the generated classes do differ a little


def test_shuffled_labels_score_worse(reference):
    _, _, stats = reference
    gen_x, gen_labels = features([200, 200, 200], seed=2)
    right = class_fid(gen_x, gen_labels, stats).mean
    shuffled = gen_labels[torch.randperm(600, generator=torch.Generator().manual_seed(3))]
    wrong = class_fid(gen_x, shuffled, stats).mean
    # Classes 3 apart on every axis: a shuffled class is a mixture whose mean and spread
    # are far from any one class's.
    assert right < 1.0 < 10 * right < wrong


def test_a_class_with_fewer_than_two_samples_has_no_value_and_no_mean(reference):
    _, _, stats = reference
    gen_x, gen_labels = features([50, 1, 40], seed=4)
    result = class_fid(gen_x, gen_labels, stats)
    assert result.mean is None and set(result.per_class) == {0, 2}
    assert "class 1: 1 generated and 250 reference samples" in result.missing[1]


def test_a_class_absent_from_the_reference_is_said(reference):
    _, _, stats = reference
    gen_x, gen_labels = features([20, 20, 20], seed=5)
    gen_labels[:3] = 7
    result = class_fid(gen_x, gen_labels, stats)
    assert result.mean is None and "class 7: no reference samples" in result.missing[7]


def test_a_class_with_no_more_samples_than_features_is_rank_deficient_yet_defined(reference):
    """fid.py's policy: two samples a side suffice for a value; n <= F is listed."""
    ref_x, ref_labels, stats = reference
    gen_x, gen_labels = features([F, 30, 2], seed=6)
    result = class_fid(gen_x, gen_labels, stats)
    assert result.mean is not None and result.rank_deficient == [0, 2]
    for c in (0, 2):  # scipy's sqrtm of the singular product agrees
        expected = scipy_fid(gen_x[gen_labels == c].numpy(), ref_x[ref_labels == c].numpy())
        assert result.per_class[c] == pytest.approx(expected, rel=1e-6)


def test_bootstrap_replicates_are_class_fid_of_the_resampled_sets(reference):
    _, _, stats = reference
    gen_x, gen_labels = features([60, 60, 60], seed=7)
    boot = Bootstrap(180, replicates=5)
    values = class_fid_replicates(gen_x, gen_labels, stats, boot.index_sets)
    assert values is not None and len(values) == 5
    for idx, value in zip(boot.index_sets, values):
        x, labels = gen_x[idx].numpy(), gen_labels[idx].numpy()
        ref_x, ref_labels = reference[0].numpy(), reference[1].numpy()
        expected = np.mean([scipy_fid(x[labels == c], ref_x[ref_labels == c])
                            for c in range(CLASSES)])
        assert value == pytest.approx(expected, rel=1e-8)


def test_no_replicates_when_a_resampled_set_loses_a_class(reference):
    _, _, stats = reference
    gen_x, gen_labels = features([60, 60, 2], seed=8)
    assert class_fid_replicates(gen_x, gen_labels, stats,
                                Bootstrap(122, replicates=50).index_sets) is None
