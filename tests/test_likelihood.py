"""NLL by the PF-ODE against the Gaussian-mixture oracle's closed-form log p_eps(x)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import ParameterError
from harness.core.model import DataSpec
from harness.metrics.likelihood import AugmentedDrift, ode_nll
from harness.models.oracle import mixture_64d, ring_2d
from harness.core.sde import EDMSDE, VPSDE


def _points(model, n, seed=1):
    return model.sample_clean(n, generator=torch.Generator().manual_seed(seed))


def _exact_nll(model, x, eps):
    return -model.log_prob(x, eps)


# In 2-D the Hutchinson noise per point is large (the ring's components have std 0.1, so
# the score's Jacobian is large): many points are needed to resolve 0.01 nats/dim.
@pytest.mark.parametrize("preset, sde, n", [(ring_2d, VPSDE(), 4096),
                                            (mixture_64d, EDMSDE(), 128)],
                         ids=["ring2d-vp", "gmm64d-edm"])
def test_hutchinson_nll_matches_closed_form(preset, sde, n):
    model = preset(sde)
    x = _points(model, n)
    result = ode_nll(model, x, num_probes=4, probe="rademacher")
    exact = float(_exact_nll(model, x, sde.t_min).mean())
    error = result.nats - exact
    assert result.probe_stderr > 0
    assert abs(error) <= 3 * result.probe_stderr, (error, result.probe_stderr)
    assert abs(error) / result.dim <= 0.01
    assert result.eps == sde.t_min and result.solver == "dopri5"
    assert result.values.shape == (n, 4)


@pytest.mark.parametrize("sde", [VPSDE(), EDMSDE()], ids=["vp", "edm"])
def test_exact_trace_matches_closed_form_per_point(sde):
    model = ring_2d(sde)
    x = _points(model, 64, seed=2)
    result = ode_nll(model, x, method="exact")
    exact = _exact_nll(model, x, sde.t_min)
    per_point = result.values[:, 0] - exact
    # Without probe noise only the solver's error is left: small for every point.
    assert per_point.abs().max() / result.dim < 5e-3
    assert abs(result.nats - float(exact.mean())) / result.dim < 1e-3
    assert result.probe_stderr == 0.0 and result.num_probes == 1


def test_exact_divergence_is_the_jacobian_trace_in_64d():
    model = mixture_64d(VPSDE())
    x = _points(model, 3, seed=3)
    flow = AugmentedDrift(model, probes=None)
    state = torch.cat([x, torch.zeros(3, 1, dtype=x.dtype)], dim=1)
    divergence = flow.ode_drift(state, 0.3)[:, -1]
    for i in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda row: model.ode_drift(row[None], 0.3)[0], x[i])
        torch.testing.assert_close(divergence[i], jac.trace())


def test_exact_trace_and_hutchinson_agree():
    model = ring_2d(VPSDE())
    x = _points(model, 96, seed=3)
    exact = ode_nll(model, x, method="exact")
    hutch = ode_nll(model, x, num_probes=8, probe="gaussian", seed=5)
    assert hutch.probe_stderr > 0
    assert abs(hutch.nats - exact.nats) <= 3 * hutch.probe_stderr
    # The trajectories are identical, so the two differ by probe noise only: per point,
    # the K-probe mean's t-statistic (K - 1 = 7 degrees of freedom, median |t| = 0.71).
    # The median, not the spread: the skewed probe values give the t's heavy tails.
    per_point_se = hutch.values.std(1) / math.sqrt(hutch.num_probes)
    z = (hutch.values.mean(1) - exact.values[:, 0]) / per_point_se
    assert 0.5 < float(z.abs().median()) < 1.0


def test_hutchinson_error_shrinks_like_inverse_sqrt_probes():
    model = ring_2d(VPSDE())
    x = _points(model, 256, seed=4)
    truth = ode_nll(model, x, method="exact").values[:, 0]
    few = ode_nll(model, x, num_probes=2, probe="gaussian", seed=11)
    many = ode_nll(model, x, num_probes=8, probe="gaussian", seed=12)
    rms = lambda r: float((r.values.mean(1) - truth).pow(2).mean().sqrt())  # noqa: E731
    # 4x the probes: half the error, both measured against the truth and as reported.
    assert 1.6 < rms(few) / rms(many) < 2.5
    assert 1.6 < few.probe_stderr / many.probe_stderr < 2.5


def test_probes_are_per_sample_and_fixed():
    """A point's estimate depends only on (seed, index), not on its batch."""
    sde = EDMSDE()
    model = ring_2d(sde)
    x = _points(model, 8, seed=7)
    whole = ode_nll(model, x, num_probes=3, seed=9, batch_size=1)
    part = ode_nll(model, x[[5, 2]], num_probes=3, seed=9, indices=[5, 2], batch_size=1)
    torch.testing.assert_close(part.values, whole.values[[5, 2]])
    other_seed = ode_nll(model, x, num_probes=3, seed=10, batch_size=1)
    assert not torch.allclose(other_seed.values, whole.values)
    # The right-hand side is deterministic: same state, same output (probes held fixed).
    flow = AugmentedDrift(model, torch.randn(3, 8, 2, dtype=torch.float64))
    state = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(flow.ode_drift(state, 1.0), flow.ode_drift(state, 1.0))


def test_points_that_are_not_data_are_not_dequantised():
    """`dequantise=False`: the density at the points themselves, even for quantised data."""
    model = ring_2d(VPSDE())
    x = _points(model, 16, seed=4)
    model.data = DataSpec(model.data.shape, (-1.5, 1.5), levels=7)
    as_given = ode_nll(model, x, method="exact", dequantise=False)
    exact = _exact_nll(model, x, model.sde.t_min)
    assert (as_given.values[:, 0] - exact).abs().max() / 2 < 5e-3
    dequantised = ode_nll(model, x, method="exact")
    assert (dequantised.values[:, 0] - exact).abs().max() > 0.05


def test_batches_report_nfe_mean_and_max():
    model = ring_2d(VPSDE())
    x = _points(model, 48, seed=8)
    result = ode_nll(model, x, batch_size=16, probe="gaussian", num_probes=2)
    assert result.nfe_max >= result.nfe_mean > 10
    assert result.values.shape == (48, 2)


def test_refuses_bad_options():
    sde = VPSDE()
    model = ring_2d(sde)
    x = _points(model, 4)
    with pytest.raises(ParameterError, match="probe"):
        ode_nll(model, x, probe="uniform")
    with pytest.raises(ParameterError, match="eps"):
        ode_nll(model, x, eps=2.0)


def test_params_state_units_and_conventions():
    model = ring_2d(VPSDE())
    result = ode_nll(model, _points(model, 16), num_probes=2)
    params = result.params()
    assert params["nll_bits_per_dim_formula"] == "nats / (D log 2)"
    assert params["nll_eps"] == model.sde.t_min and params["nll_solver"] == "dopri5"
    assert params["nll_rtol"] == 1e-5 and params["nll_dequantisation"].startswith("none")
    assert result.bits_per_dim == pytest.approx(result.nats / (2 * math.log(2)))
    assert result.nats_per_dim == pytest.approx(result.nats / 2)
