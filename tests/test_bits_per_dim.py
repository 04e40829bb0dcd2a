"""bits/dim: the dequantisation offset comes from the data's levels and range, never '+7'."""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics.likelihood import dequantise, ode_nll, to_bits_per_dim
from harness.core.model import DataSpec
from harness.models.oracle import ring_2d
from harness.core.sde import VPSDE

# Five levels on [-1, 1] (bin width 1/2) with probabilities 1/8, 1/4, 1/4, 1/4, 1/8:
# entropy 2 * (1/8) * 3 + 3 * (1/4) * 2 = 2.25 bits.
LEVELS = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
PROBS = torch.tensor([1, 2, 2, 2, 1], dtype=torch.float64) / 8
ENTROPY_BITS = 2.25
SPEC = DataSpec(shape=(2,), value_range=(-1.0, 1.0), levels=5)


def _data() -> torch.Tensor:
    """64 points in 2-D whose empirical distribution is exactly PROBS x PROBS."""
    column = torch.repeat_interleave(LEVELS, (PROBS * 8).long())   # 8 values
    a, b = torch.meshgrid(column, column, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], dim=1)


def _piecewise_constant_nll(y: torch.Tensor) -> torch.Tensor:
    """-log q(y) for q = p_l / w on bin l in every coordinate (independent coordinates)."""
    width = SPEC.bin_width
    index = ((y - SPEC.value_range[0]) / width).round().long()
    return -(PROBS[index] / width).log().sum(1)


def test_entropy_of_a_dequantised_discrete_distribution_in_bits():
    x = _data()
    y = dequantise(x, SPEC, seed=3)
    # Every value moved within its own bin, not beyond.
    assert (y - x).abs().max() <= SPEC.bin_width / 2
    assert (y - x).abs().max() > 0.4 * SPEC.bin_width
    nats = float(_piecewise_constant_nll(y).mean())
    assert to_bits_per_dim(nats, SPEC.dim, SPEC.bin_width) == pytest.approx(ENTROPY_BITS,
                                                                             rel=1e-12)
    # Without the offset the number would be the density's, log2(1/2) = 1 bit lower.
    assert nats / (SPEC.dim * math.log(2)) == pytest.approx(ENTROPY_BITS - 1, rel=1e-12)


def test_dequantisation_noise_fills_the_bin_uniformly():
    spec = DataSpec(shape=(8,), value_range=(0.0, 1.0), levels=11)
    x = torch.zeros(300, 8, dtype=torch.float64)
    u = (dequantise(x, spec, seed=0) / spec.bin_width).flatten().sort().values
    # Kolmogorov-Smirnov distance to U(-1/2, 1/2); the 0.1% critical value is 1.95/sqrt(n).
    grid = (torch.arange(1, len(u) + 1, dtype=torch.float64) - 0.5) / len(u) - 0.5
    assert float((u - grid).abs().max()) < 1.95 / math.sqrt(len(u))
    again = dequantise(x[:10], spec, seed=0)
    torch.testing.assert_close(again, dequantise(x, spec, seed=0)[:10])


def test_offset_for_256_levels_on_minus_one_one_is_log2_of_127_5_not_7():
    spec = DataSpec(shape=(3, 32, 32), value_range=(-1.0, 1.0), levels=256)
    assert -math.log2(spec.bin_width) == pytest.approx(math.log2(127.5))
    assert to_bits_per_dim(0.0, spec.dim, spec.bin_width) == pytest.approx(6.99435, abs=1e-5)
    # The "+7" belongs to another scaling: 256 bins of width 1/128 (x = (v + u) / 128 - 1).
    shifted = DataSpec(shape=(1,), value_range=(-1.0, 1.0 - 2 / 256), levels=256)
    assert to_bits_per_dim(0.0, 1, shifted.bin_width) == pytest.approx(7.0)
    # The digits: 17 levels on [-1, 1], bin width 1/8, offset 3 bits.
    digits = DataSpec(shape=(1, 8, 8), value_range=(-1.0, 1.0), levels=17)
    assert to_bits_per_dim(0.0, digits.dim, digits.bin_width) == pytest.approx(3.0)
    # Continuous data: no offset at all.
    assert to_bits_per_dim(2 * math.log(2), 2, None) == pytest.approx(1.0)


def test_ode_nll_evaluates_the_dequantised_points_and_converts_with_the_offset():
    model = ring_2d(VPSDE())
    quantised = DataSpec(shape=(2,), value_range=(-1.5, 1.5), levels=61)   # width 0.05
    model.data = quantised
    x = model.sample_clean(32, generator=torch.Generator().manual_seed(0))
    x = (x / quantised.bin_width).round() * quantised.bin_width
    result = ode_nll(model, x, method="exact", seed=4)
    exact = -model.log_prob(dequantise(x, quantised, seed=4), model.sde.t_min)
    torch.testing.assert_close(result.values[:, 0], exact, atol=5e-3, rtol=0)
    expected = (result.nats / 2 - math.log(0.05)) / math.log(2)
    assert result.bits_per_dim == pytest.approx(expected)
    assert result.offset_bits_per_dim == pytest.approx(-math.log2(0.05))
    assert result.params()["nll_bin_width"] == pytest.approx(0.05)
    assert "uniform" in result.params()["nll_dequantisation"]
