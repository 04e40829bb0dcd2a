"""The forward processes: drift and diffusion agree with the marginals they claim."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.sde import SDES, make_sde
from harness.errors import UnknownNameError

TIMES = [0.05, 0.2, 0.5, 0.9]


def _times(sde):
    return [sde.T * f for f in TIMES]


def test_scale_and_sigma_derivatives_match_finite_differences(sde):
    for t in _times(sde):
        h = 1e-6 * sde.T
        ds = (sde.scale(t + h) - sde.scale(t - h)) / (2 * h)
        dsigma = (sde.sigma(t + h) - sde.sigma(t - h)) / (2 * h)
        assert sde.scale_rate(t) == pytest.approx(ds / sde.scale(t), rel=1e-5, abs=1e-8)
        assert sde.sigma_derivative(t) == pytest.approx(dsigma, rel=1e-5)


def test_diffusion_matches_the_variance_growth_of_the_marginal(sde):
    # d/dt Var = 2 f Var + g^2 for the linear SDE; Var of x_t | x_0 is (s sigma)^2,
    # up to the VE's variance at t = 0, which does not change the derivative.
    for t in _times(sde):
        h = 1e-6 * sde.T
        var = lambda u: (sde.scale(u) * sde.sigma(u)) ** 2  # noqa: E731
        dvar = (var(t + h) - var(t - h)) / (2 * h)
        expected = 2 * sde.scale_rate(t) * var(t) + sde.diffusion_squared(t)
        assert dvar == pytest.approx(expected, rel=1e-5)


def test_t_of_sigma_inverts_sigma(sde):
    for t in _times(sde):
        assert sde.t_of_sigma(sde.sigma(t)) == pytest.approx(t, rel=1e-9)


def test_float_and_tensor_paths_agree(sde):
    t = torch.tensor(_times(sde), dtype=torch.float64)
    for fn in (sde.scale, sde.sigma, sde.scale_rate, sde.sigma_derivative,
               sde.diffusion_squared):
        values = fn(t)
        for i, ti in enumerate(t.tolist()):
            assert float(values[i]) == pytest.approx(fn(ti), rel=1e-12)


def test_reverse_drift_family(sde):
    x = torch.randn(5, 3, dtype=torch.float64)
    score = torch.randn(5, 3, dtype=torch.float64)
    t = 0.3 * sde.T
    g2 = sde.diffusion_squared(t)
    f = sde.drift(x, t)
    torch.testing.assert_close(sde.reverse_drift(x, t, score, lam=1.0), f - g2 * score)
    torch.testing.assert_close(sde.ode_drift(x, t, score), f - 0.5 * g2 * score)
    torch.testing.assert_close(sde.reverse_drift(x, t, score, lam=0.5),
                               f - 0.5 * 1.25 * g2 * score)


def test_transition_composes_marginals(sde):
    t1, t2 = 0.2 * sde.T, 0.7 * sde.T
    a, b2 = sde.transition(t1, t2)
    assert a == pytest.approx(sde.scale(t2) / sde.scale(t1))
    # Var at t2 = a^2 Var at t1 + b^2 for a point mass x_0 = 0.
    var = lambda u: (sde.scale(u) * sde.sigma(u)) ** 2  # noqa: E731
    assert var(t2) == pytest.approx(a**2 * var(t1) + b2, rel=1e-10)


def test_prior_log_prob_is_the_gaussian_density(sde):
    x = torch.randn(4, 2, 3, dtype=torch.float64) * sde.prior_std
    dist = torch.distributions.Normal(0.0, sde.prior_std)
    expected = dist.log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(x), expected)


def test_known_parameters():
    vp = make_sde("vp")
    assert (vp.beta_min, vp.beta_max, vp.T) == (0.1, 20.0, 1.0)
    assert vp.diffusion_squared(0.5) == pytest.approx(0.1 + 0.5 * 19.9)
    ve = make_sde("ve")
    assert (ve.sigma(0.0), ve.sigma(1.0)) == (pytest.approx(0.01), pytest.approx(50.0))
    edm = make_sde("edm")
    assert edm.sigma(3.0) == 3.0 and edm.scale(3.0) == 1.0
    assert make_sde("subvp").sigma(1.0) == pytest.approx(
        (1 - math.exp(-vp._integral_beta(1.0))) / math.exp(-0.5 * vp._integral_beta(1.0)))


def test_unknown_sde_is_refused_with_the_list():
    with pytest.raises(UnknownNameError, match="did you mean 'vp'.*Available: edm, subvp, ve, vp"
                       .replace("did", "Did")):
        make_sde("vpp")
    assert set(SDES) == {"vp", "subvp", "ve", "edm"}
