"""Bootstrap intervals and paired comparisons, against independent expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from harness.metrics.bootstrap import (
    Bootstrap,
    index_sets,
    mean_over_seeds,
    paired_comparison,
    normal_interval,
)
from harness.metrics.feature_replicates import fid_replicates, kid_replicates
from harness.metrics.fid import ReferenceStats


def test_index_sets_depend_only_on_n_and_count():
    a, b = index_sets(50, 20), index_sets(50, 20)
    assert torch.equal(a, b) and a.shape == (20, 50)
    assert int(a.min()) >= 0 and int(a.max()) < 50
    assert not torch.equal(index_sets(51, 20)[:, :50], a)


def test_normal_interval_is_the_estimate_plus_minus_z_times_the_replicates_sd():
    values = np.random.default_rng(0).normal(size=401)
    low, high = normal_interval(3.0, values.tolist(), 0.9)
    half = 1.6448536269514722 * values.std(ddof=1)   # z_0.95
    assert low == pytest.approx(3.0 - half, abs=1e-12)
    assert high == pytest.approx(3.0 + half, abs=1e-12)
    assert normal_interval(0.1, values.tolist(), 0.9, minimum=0.0)[0] == 0.0
    assert math.isnan(normal_interval(1.0, [1.0, math.inf])[0])


def test_interval_of_a_mean_covers_the_truth_at_its_level():
    """Coverage of the interval of a sample mean (N(0, 1) data): ~90 % at
    level 0.9 over many independent sets."""
    rng = torch.Generator().manual_seed(1)
    covered, sets = 0, 300
    idx = index_sets(100, 200)
    for _ in range(sets):
        x = torch.randn(100, generator=rng, dtype=torch.float64)
        low, high = normal_interval(float(x.mean()), x[idx].mean(1).tolist(), 0.9)
        covered += low <= 0.0 <= high
    assert 0.84 <= covered / sets <= 0.95


def _reference(features: torch.Tensor) -> ReferenceStats:
    f = features.double()
    return ReferenceStats("ref", "sha", f.shape[0], f.sum(0), f.T @ f, features=f)


def _scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def test_fid_replicates_equal_scipy_on_each_resample():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 4, generator=gen, dtype=torch.float64) + 0.3
    y = torch.randn(80, 4, generator=gen, dtype=torch.float64)
    idx = index_sets(60, 5)
    values = fid_replicates(x, _reference(y), idx)
    for row, value in zip(idx, values):
        assert value == pytest.approx(_scipy_fid(x[row].numpy(), y.numpy()), rel=1e-8)


def _kid_by_loops(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> float:
    """Unbiased MMD^2, kernel (x.y/d + 1)^3, written out over pairs of distinct samples."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xs = [x[r] for r in rows]
    xx = [k(xs[i], xs[j]) for i in range(len(xs)) for j in range(len(xs))
          if rows[i] != rows[j]]
    yy = [k(y[i], y[j]) for i in range(len(y)) for j in range(len(y)) if i != j]
    xy = [k(a, b) for a in xs for b in y]
    return float(np.mean(xx) + np.mean(yy) - 2 * np.mean(xy))


def test_kid_replicates_equal_the_pairwise_formula_and_skip_self_pairs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(15, 3, generator=gen, dtype=torch.float64) + 0.5
    idx = index_sets(12, 3)
    values = kid_replicates(x, _reference(y), idx)
    for row, value in zip(idx, values):
        assert value == pytest.approx(_kid_by_loops(x.numpy(), y.numpy(), row.numpy()),
                                      rel=1e-10)


def test_a_known_difference_is_found_and_an_identical_sampler_is_tied():
    """Two 'samplers' on the same initial noise: B = A + 0.2 (a known shift) is told
    apart; A against a copy of itself is tied. The statistic is the squared distance of
    the mean to a fixed target 1, as FID is a distance to fixed reference statistics:
    B - A = (0.8 - m)^2 - (1 - m)^2 = -0.36 + 0.4 m for the set's mean m."""
    noise = torch.randn(200, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = noise, noise + 0.2
    boot = Bootstrap(200)
    stat = lambda s: lambda i: float((1 - s[i].mean()) ** 2)  # noqa: E731
    reps_a = [stat(a)(idx) for idx in boot.index_sets]
    reps_b = [stat(b)(idx) for idx in boot.index_sets]
    shifted = paired_comparison(stat(b)(slice(None)), stat(a)(slice(None)), reps_b, reps_a)
    assert not shifted.tied and shifted.high < 0
    assert shifted.difference == pytest.approx(-0.36 + 0.4 * float(noise.mean()))
    same = paired_comparison(stat(a)(slice(None)), stat(a)(slice(None)), reps_a, list(reps_a))
    assert same.tied and same.difference == 0
    # The paired interval is far narrower than either value's own interval.
    paired_width = shifted.high - shifted.low
    lo_a, hi_a = normal_interval(stat(a)(slice(None)), reps_a)
    assert paired_width < 0.5 * (hi_a - lo_a)


def test_replicates_average_over_seeds():
    assert mean_over_seeds([[1.0, 2.0], [3.0, 6.0]]) == [2.0, 4.0]
    with pytest.raises(ValueError):
        mean_over_seeds([[1.0], [1.0, 2.0]])


def test_budgets_group_the_nfe_samplers_spend_for_one_budget():
    """Heun's 2N - 1 and Euler's N for a budget of 10 (9, 10) are one budget; so are
    predictor-corrector's 34 and the others' 35; 20 and 34 are not."""
    import pandas as pd

    from harness.bench.comparison import budgets

    board = pd.DataFrame({"sampler": ["heun", "euler", "pc", "euler", "heun", "data"],
                          "nfe_mean": [9.0, 10.0, 34.0, 35.0, 19.0, float("nan")]})
    groups = budgets(board)
    assert groups[0] == groups[1] != groups[4]
    assert groups[2] == groups[3] != groups[4]
    assert 5 not in groups                       # the floor row has no budget
