"""Bootstrap intervals and paired comparisons, against independent expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from harness.metrics.bootstrap import (
    REFERENCE_KEY,
    Bootstrap,
    Spread,
    distance_interval,
    index_sets,
    interval,
    mean_over_seeds,
    normal_interval,
    paired_comparison,
    split_recorded,
)
from harness.metrics.feature_replicates import fid_replicates, kid_replicates


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
    assert interval(3.0, values.tolist(), level=0.9) == (low, high)  # no linear parts


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


def _scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def test_fid_replicates_equal_scipy_on_each_resample_of_both_sets():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 4, generator=gen, dtype=torch.float64) + 0.3
    y = torch.randn(80, 4, generator=gen, dtype=torch.float64)
    idx, ref_idx = index_sets(60, 5), index_sets(80, 5, key=REFERENCE_KEY)
    replicates = fid_replicates(x, y, idx, ref_idx)
    assert replicates.estimate == pytest.approx(_scipy_fid(x.numpy(), y.numpy()), rel=1e-8)
    for row, ref_row, value in zip(idx, ref_idx, replicates.values.tolist()):
        assert value == pytest.approx(_scipy_fid(x[row].numpy(), y[ref_row].numpy()),
                                      rel=1e-8)


def _kid_by_loops(x: np.ndarray, y: np.ndarray, rows: np.ndarray, ref_rows: np.ndarray
                  ) -> float:
    """Unbiased MMD^2, kernel (x.y/d + 1)^3, written out over pairs of distinct samples."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xs, ys = [x[r] for r in rows], [y[r] for r in ref_rows]
    xx = [k(xs[i], xs[j]) for i in range(len(xs)) for j in range(len(xs))
          if rows[i] != rows[j]]
    yy = [k(ys[i], ys[j]) for i in range(len(ys)) for j in range(len(ys))
          if ref_rows[i] != ref_rows[j]]
    xy = [k(a, b) for a in xs for b in ys]
    return float(np.mean(xx) + np.mean(yy) - 2 * np.mean(xy))


def test_kid_replicates_equal_the_pairwise_formula_and_skip_self_pairs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(15, 3, generator=gen, dtype=torch.float64) + 0.5
    idx, ref_idx = index_sets(12, 3), index_sets(15, 3, key=REFERENCE_KEY)
    replicates = kid_replicates(x, y, idx, ref_idx)
    every = np.arange(12), np.arange(15)
    assert replicates.estimate == pytest.approx(_kid_by_loops(x.numpy(), y.numpy(), *every),
                                                rel=1e-10)
    for row, ref_row, value in zip(idx, ref_idx, replicates.values.tolist()):
        assert value == pytest.approx(_kid_by_loops(x.numpy(), y.numpy(), row.numpy(),
                                                    ref_row.numpy()), rel=1e-10)


@pytest.mark.parametrize("statistic", [fid_replicates, kid_replicates])
def test_linear_parts_are_the_derivative_in_the_resampling_weights(statistic):
    """Each replicate's linear part is the metric's derivative in the counts, applied to
    the resample's counts: checked against central differences of the metric itself
    (scipy's FID, the pairwise KID) at weights 1 +- eps (c - 1), which is that
    derivative whatever the second-order part."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64) * 1.3 + 0.4
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    idx, ref_idx = index_sets(40, 4), index_sets(30, 4, key=REFERENCE_KEY)
    replicates = statistic(x, y, idx, ref_idx)
    for b in range(4):
        c = torch.bincount(idx[b], minlength=40).double()
        d = torch.bincount(ref_idx[b], minlength=30).double()
        eps = 1e-4
        plus = _weighted(statistic, x, y, 1 + eps * (c - 1), 1 + eps * (d - 1))
        minus = _weighted(statistic, x, y, 1 - eps * (c - 1), 1 - eps * (d - 1))
        assert float(replicates.linear[b]) == pytest.approx((plus - minus) / (2 * eps),
                                                            rel=1e-6)


def _weighted(statistic, x, y, wx, wy) -> float:
    """The metric of the sets weighted by wx and wy (sum n and m), written out."""
    if statistic is fid_replicates:
        def moments(z, w):
            mean = (w[:, None] * z).sum(0) / w.sum()
            centred = z - mean
            return mean, (w[:, None] * centred).T @ centred / (w.sum() - 1)
        (m1, c1), (m2, c2) = moments(x, wx), moments(y, wy)
        root = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
        return float((m1 - m2).square().sum() + c1.trace() + c2.trace()
                     - 2 * np.trace(root))
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731

    def pairs(kernel, w):
        total = w @ kernel @ w - (w.square() * kernel.diagonal()).sum()
        return total / (w.sum() ** 2 - w.square().sum())
    return float(pairs(k(x, x), wx) + pairs(k(y, y), wy)
                 - 2 * wx @ k(x, y) @ wy / (wx.sum() * wy.sum()))


def test_a_distance_interval_follows_the_variance_from_zero_to_the_estimate():
    """The lower end t solves (T - t)^2 = z^2 v(t), v rising linearly from q at the zero
    to max(v_l - 2 q, q) at the estimate; the upper end is T + z sd(T*). Checked
    against the root of that equation found by bisection."""
    gen = torch.Generator().manual_seed(6)
    linear = 3 * torch.randn(4000, generator=gen, dtype=torch.float64)
    second = torch.randn(4000, generator=gen, dtype=torch.float64)
    spread = Spread.of((linear + second).tolist(), linear.tolist())
    q, v = spread.second_order, max(spread.linear - 2 * spread.second_order,
                                    spread.second_order)
    z, estimate, zero = 1.959963984540054, 10.0, 2.0
    low, high = distance_interval(estimate, spread, zero)

    def excess(t):  # (T - t)^2 - z^2 v(t), increasing as t falls below T
        return (estimate - t) ** 2 - z * z * (q + (v - q) * (t - zero) / (estimate - zero))
    a, b = zero, estimate
    for _ in range(100):
        a, b = (a, (a + b) / 2) if excess((a + b) / 2) < 0 else ((a + b) / 2, b)
    assert low == pytest.approx(a, rel=1e-9)
    assert high == pytest.approx(estimate + z * math.sqrt(spread.total), rel=1e-12)
    # The same spread at a distance far larger than its noise: the lower end is the
    # delta method's, z sqrt(v) below; and at the zero itself, z sqrt(q) below.
    far_low, _ = distance_interval(1e6, spread, zero)
    assert 1e6 - far_low == pytest.approx(z * math.sqrt(v), rel=1e-4)
    at_zero, _ = distance_interval(zero, spread, zero)
    assert zero - at_zero == pytest.approx(z * math.sqrt(q), rel=1e-12)


def test_an_interval_is_never_wholly_below_what_its_quantity_can_take():
    values = np.random.default_rng(1).normal(size=500).tolist()
    sd = float(np.std(values, ddof=1))
    z = 1.959963984540054
    assert normal_interval(3.0, values) == pytest.approx((3 - z * sd, 3 + z * sd))
    assert normal_interval(1.0, values, minimum=0.0) == pytest.approx((0.0, 1 + z * sd))
    # A negative estimate of a distance reads as 0, however far below.
    assert normal_interval(-12.0, values, minimum=0.0) == pytest.approx((0.0, z * sd))
    spread = Spread.of(values, [0.5 * v for v in values])
    low, high = distance_interval(-12.0, spread, 0.0, minimum=0.0)
    assert low == 0.0 and high == pytest.approx(z * math.sqrt(spread.total))


def test_stored_replicates_keep_their_linear_parts_apart():
    boot = Bootstrap(10, replicates=3)
    boot.record("fid", [1.0, 2.0, 3.0], minimum=0.0, linear=[0.5, 1.5, 2.5])
    boot.record("accuracy", [0.1, 0.2, 0.3])
    values, linear = split_recorded(boot.recorded())
    assert values == {"fid": [1.0, 2.0, 3.0], "accuracy": [0.1, 0.2, 0.3]}
    assert linear == {"fid": [0.5, 1.5, 2.5]}
    # The reference's index sets are the same for every trial, and not the samples'.
    other_trial = Bootstrap(99, replicates=3)
    assert torch.equal(boot.reference_sets(10), other_trial.reference_sets(10))
    assert not torch.equal(boot.reference_sets(10), boot.index_sets)


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

    from harness.bench.reporting.comparison import budgets

    board = pd.DataFrame({"sampler": ["heun", "euler", "pc", "euler", "heun", "data"],
                          "nfe_mean": [9.0, 10.0, 34.0, 35.0, 19.0, float("nan")]})
    groups = budgets(board)
    assert groups[0] == groups[1] != groups[4]
    assert groups[2] == groups[3] != groups[4]
    assert 5 not in groups                       # the floor row has no budget
