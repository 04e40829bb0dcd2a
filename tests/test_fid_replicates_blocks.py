"""FID's replicates in blocks of rows (`harness.metrics.feature_replicates`): with the
temporary-array budget made tiny, so that every sum runs over many blocks, the moments
and the derivatives are those of the formulas written out here over all rows at once."""

from __future__ import annotations

import pytest
import torch

from harness.metrics import feature_replicates
from harness.metrics.feature_replicates import _fid_derivative, _weighted_moments


@pytest.fixture()
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(feature_replicates, "CHUNK_ELEMENTS", 50)


def data(n=300, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=torch.float64, generator=generator) * torch.arange(
        1, dim + 1, dtype=torch.float64)


def test_weighted_moments_in_blocks_are_the_weighted_mean_and_covariance(tiny_blocks):
    x = data()
    generator = torch.Generator().manual_seed(1)
    c = torch.randint(0, 3, (4, x.shape[0]), generator=generator).double()
    mean, cov = _weighted_moments(x, c)
    for b in range(c.shape[0]):
        n = c[b].sum()
        expected_mean = (c[b, :, None] * x).sum(0) / n
        centred = x - expected_mean
        expected_cov = (c[b, :, None] * centred).T @ centred / (n - 1)
        torch.testing.assert_close(mean[b], expected_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cov[b], expected_cov, rtol=1e-10, atol=1e-10)


def test_fid_derivative_in_blocks_is_the_formula_over_all_rows(tiny_blocks):
    x, y = data(seed=2), data(seed=3) + 0.5
    mean, cov = x.mean(0), torch.cov(x.T)
    mean_other, cov_other = y.mean(0), torch.cov(y.T)
    got = _fid_derivative(x, mean, cov, mean_other, cov_other)
    quadratic = feature_replicates._trace_sqrt_quadratic(cov, cov_other)
    centred, n = x - mean, x.shape[0]
    expected = (2 * centred @ (mean - mean_other) / n
                + torch.einsum("if,fg,ig->i", centred, quadratic, centred) / (n - 1))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
