"""The Gaussian-mixture oracle: its score, denoiser and density are mutually exact."""

from __future__ import annotations

import math

import pytest
import torch

from harness.models.oracle import GaussianMixture, mixture_64d, ring_2d
from harness.core.sde import make_sde

from .test_cuda_sync import HostReads


def _points(model, n=16, t=0.3):
    return model.sample(n, t * model.sde.T, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("frac", [0.01, 0.3, 0.9])
def test_exact_score_is_the_gradient_of_the_exact_log_density(ring, frac):
    t = frac * ring.sde.T
    x = _points(ring, t=frac).requires_grad_(True)
    (grad,) = torch.autograd.grad(ring.log_prob(x, t).sum(), x)
    torch.testing.assert_close(ring.score(x.detach(), t), grad, rtol=1e-7, atol=1e-9)


def test_score_from_denoiser_matches_direct_score(ring):
    t = 0.4 * ring.sde.T
    x = _points(ring, t=0.4)
    direct = ring.score(x, t)
    via_denoiser = super(GaussianMixture, ring)._score(x, torch.full((16,), t,
                                                                     dtype=x.dtype))
    torch.testing.assert_close(direct, via_denoiser, rtol=1e-8, atol=1e-10)


def test_diagonal_mixture_log_density_matches_torch_distributions():
    sde = make_sde("vp")
    model = mixture_64d(sde, dim=5)
    t = 0.25
    s, sigma = sde.scale(t), sde.sigma(t)
    comps = torch.distributions.Independent(torch.distributions.Normal(
        s * model.means, s * (model.variances + sigma**2).sqrt()), 1)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(model.weights), comps)
    x = model.sample(32, t, torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.log_prob(x, t), mix.log_prob(x))


def test_samples_have_the_exact_moments():
    model = mixture_64d(make_sde("edm"), dim=4)
    x = model.sample_clean(200_000, torch.Generator().manual_seed(0))
    mean, cov = model.moments()
    torch.testing.assert_close(x.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.02, rtol=0)


def test_isotropic_and_diagonal_stds_agree():
    sde = make_sde("ve")
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    iso = GaussianMixture([1, 3], means, [0.3, 0.5], sde)
    diag = GaussianMixture([1, 3], means, [[0.3, 0.3], [0.5, 0.5]], sde)
    x = torch.randn(8, 2, dtype=torch.float64)
    torch.testing.assert_close(iso.log_prob(x, 0.5), diag.log_prob(x, 0.5))


def test_one_component_is_a_gaussian_with_known_log_density():
    sde = make_sde("vp")
    model = GaussianMixture([1.0], [[0.5, -0.5]], [0.2], sde)
    t = 0.1
    s, sigma = sde.scale(t), sde.sigma(t)
    x = torch.zeros(1, 2, dtype=torch.float64)
    var = s**2 * (0.04 + sigma**2)
    expected = -0.5 * (s**2 * 0.5 / var + 2 * math.log(2 * math.pi * var))
    assert model.log_prob(x, t).item() == pytest.approx(expected, rel=1e-12)


def test_invalid_parameters_are_refused():
    sde = make_sde("vp")
    with pytest.raises(ValueError, match="stds must be positive"):
        GaussianMixture([1.0], [[0.0]], [-1.0], sde)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([1.0, 2.0], [[0.0]], [1.0], sde)


def test_per_row_noise_levels_match_row_by_row_evaluation():
    # Exercises the general path (rows at different t) against the shared-sigma path.
    model = mixture_64d(make_sde("vp"), dim=6)
    t = torch.tensor([0.05, 0.3, 0.3, 0.9], dtype=torch.float64)
    x = model.sample(4, 0.3, torch.Generator().manual_seed(5))
    together = model.score(x, t)
    rows = torch.cat([model.score(x[i:i + 1], float(t[i])) for i in range(4)])
    torch.testing.assert_close(together, rows, rtol=1e-10, atol=1e-12)
    logp = model.log_prob(x, t)
    torch.testing.assert_close(logp, torch.cat([model.log_prob(x[i:i + 1], float(t[i]))
                                                for i in range(4)]))


@pytest.mark.parametrize("preset", [ring_2d, mixture_64d])
def test_one_level_for_the_batch_matches_one_level_per_row(preset):
    # A 0-d level takes the (B, D) x (D, K) products, a (B,) tensor the per-row path.
    model = preset(make_sde("vp"))
    x = model.sample(32, 0.5, torch.Generator().manual_seed(1))
    one = torch.tensor(0.5, dtype=x.dtype)
    per_row = one.repeat(32)  # equal values, but nothing tells the oracle without a read
    for evaluate in (model.denoise, model.score, model.log_prob):
        torch.testing.assert_close(evaluate(x, one), evaluate(x, per_row), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("preset", [ring_2d, mixture_64d])
def test_evaluations_read_no_tensor_values_on_the_host(preset):
    """Inside a sampling loop a host read is a GPU sync per model call (cf. test_cuda_sync)."""
    model = preset(make_sde("vp"))
    x = model.sample(8, 0.5, torch.Generator().manual_seed(2))
    per_row = torch.linspace(0.2, 0.8, 8, dtype=x.dtype)
    with HostReads() as reads:
        for level in (0.5, torch.tensor(0.5, dtype=x.dtype), per_row):
            model.denoise(x, level)
            model.score(x, level)
            model.ode_drift(x, level)
            model.log_prob(x, level)
    assert reads.seen == []
