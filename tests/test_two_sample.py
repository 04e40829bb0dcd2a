"""MMD and sliced Wasserstein against closed forms for Gaussians and exact 1-D cases."""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics.two_sample import (gaussian_mmd2, median_bandwidth, random_directions,
                                sliced_wasserstein, wasserstein_1d)


def _normal(n, dim, mean=0.0, std=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, dim, generator=gen, dtype=torch.float64)


def _gaussian_mmd2_closed_form(shift_sq, std, dim, h):
    """MMD^2 of N(a, s^2 I) vs N(b, s^2 I), Gaussian kernel of bandwidth h:
    E k = (h^2 / (h^2 + 2 s^2))^(D/2) exp(-|a - b|^2 / (2 (h^2 + 2 s^2)))."""
    c = (h * h / (h * h + 2 * std * std)) ** (dim / 2)
    return 2 * c * (1 - math.exp(-shift_sq / (2 * (h * h + 2 * std * std))))


def test_mmd_matches_the_gaussian_closed_form():
    dim, h = 3, 1.5
    x = _normal(1500, dim, seed=1)
    y = _normal(1500, dim, mean=0.5, seed=2)
    result = gaussian_mmd2(x, y, bandwidth=h, block=256)
    closed = _gaussian_mmd2_closed_form(dim * 0.25, 1.0, dim, h)
    assert result.mmd2 == pytest.approx(closed, rel=0.15)
    assert not result.median_heuristic and result.bandwidth == h
    same = gaussian_mmd2(x, _normal(1500, dim, seed=3), bandwidth=h)
    assert abs(same.mmd2) < 0.1 * closed                 # unbiased: ~0, may be negative


def test_mmd_blocks_do_not_change_the_value_and_median_heuristic_is_used():
    x, y = _normal(300, 2, seed=4), _normal(200, 2, mean=1.0, seed=5)
    a = gaussian_mmd2(x, y, block=7)
    b = gaussian_mmd2(x, y, block=1000)
    assert a.mmd2 == pytest.approx(b.mmd2, rel=1e-12)
    assert a.median_heuristic and a.bandwidth == pytest.approx(median_bandwidth(x, y))
    pooled = torch.cat([x, y])
    distances = torch.pdist(pooled)
    assert a.bandwidth == pytest.approx(float(distances.median()))


def test_sliced_wasserstein_of_a_translation_is_the_projected_shift():
    x = _normal(400, 5, seed=6)
    shift = torch.tensor([1.0, -0.5, 0.0, 2.0, 0.3], dtype=torch.float64)
    result = sliced_wasserstein(x, x + shift, num_projections=128, seed=9)
    # Sorting commutes with a shift, so each projection's W_2 is |theta . shift| exactly.
    theta = random_directions(128, 5, seed=9)
    assert result.distance == pytest.approx(float((theta @ shift).pow(2).mean().sqrt()))
    # Over uniform directions E (theta . m)^2 = |m|^2 / D.
    many = sliced_wasserstein(x, x + shift, num_projections=4096, seed=1)
    assert many.distance == pytest.approx(float(shift.norm()) / math.sqrt(5), rel=0.05)
    assert many.stderr < result.stderr


def test_wasserstein_1d_handles_unequal_sizes_exactly():
    a = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    # The same empirical distribution, each point twice: distance 0.
    assert float(wasserstein_1d(a, a.repeat_interleave(2, dim=1))) == pytest.approx(0.0)
    # {0, 1} vs {0, 0.5, 1}: quantiles differ by 0.5 on (1/3, 1/2) and (1/2, 2/3); W_1 = 1/6.
    b = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    c = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    assert float(wasserstein_1d(b, c, p=1)) == pytest.approx(1 / 6)
    assert sliced_wasserstein(_normal(50, 2), _normal(50, 2)).distance == 0.0
