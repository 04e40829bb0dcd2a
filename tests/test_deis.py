"""deis: against diffusers' DEISMultistepScheduler, independent coefficient integrals, and its
order on the exact Gaussian flow.

diffusers' DEIS ('logrho') is this sampler with `variable = "log_rho"`; it runs on exactly
the harness's noise levels (see `diffusers_multistep_support`). Its update cannot land
on sigma = 0 (its final noise level is the smallest training one, and log rho = -inf
there gives NaN), so it is compared on grids that end above zero (the harness's grid
without its last point, and VE's, which ends at sigma_min). The paper's tAB and rhoAB
variants are checked against coefficients integrated independently (64-point
Gauss-Legendre quadrature, exact for rhoAB's polynomials, with the closed-form VP time of
rho for tAB).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre

from harness import TimeGrid, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d

from . import gaussian_closed_form as cf
from .diffusers_multistep_support import relative_difference, run_harness, run_scheduler
from .gaussian_flow_support import exact_flow, fitted_order, noise_level

# diffusers calls numpy in ways numpy 2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

REFERENCE_RTOL = 1e-10


def _above_zero(grid):
    """The grid without its last point when that point is sigma = 0."""
    if grid.sigma[-1] > 0:
        return grid
    return TimeGrid(grid.t[:-1], grid.sigma[:-1], grid.scale[:-1], grid.schedule)


@pytest.mark.parametrize("process", ["vp", "subvp", "ve", "edm"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("lower_order_final", [False, True])
def test_every_state_equals_diffusers_deis(plugins, process, order, lower_order_final):
    diffusers = pytest.importorskip("diffusers")
    sampler = plugins.samplers.get("deis")
    params = sampler.make_params({"order": order, "variable": "log_rho",
                                  "lower_order_final": lower_order_final})
    model = mixture_64d(make_sde(process))
    x = model.sde.prior_std * torch.randn(6, 64, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(3))
    for steps in (1, 2, 3, 8, 16):           # below and above diffusers' 15-step threshold
        grid = _above_zero(make_grid(model.sde, "karras", steps + 1))
        scheduler = diffusers.DEISMultistepScheduler(
            solver_order=order, prediction_type="sample", lower_order_final=lower_order_final)
        reference, _ = run_scheduler(scheduler, model, x, grid)
        ours = run_harness(sampler, model, x, grid, params)
        assert max(map(relative_difference, ours, reference)) <= REFERENCE_RTOL


def _lagrange_integrals(nodes, lo, hi, v):
    """int_lo^hi l_j(v(rho)) d rho by 64-point Gauss-Legendre, exact for polynomials."""
    points, weights = legendre.leggauss(64)
    rho = 0.5 * (hi - lo) * points + 0.5 * (hi + lo)
    out = []
    for j, node in enumerate(nodes):
        basis = np.ones_like(rho)
        for m, other in enumerate(nodes):
            if m != j:
                basis *= (v(rho) - other) / (node - other)
        out.append(0.5 * (hi - lo) * float(np.dot(weights, basis)))
    return out


def _deis_by_hand(name, x, times, order, v):
    """u_{i+1} = u_i + sum_j C_ij eps_{i-j}, eps = (u - D(u)) / rho, u = x / alpha."""
    rho = [noise_level(name, t) for t in times]
    past = []
    for i in range(len(times) - 1):
        u = x / cf.alpha(name, times[i])
        past = [(v(rho[i]), (u - cf.edm_denoiser(u, rho[i])) / rho[i])] + past[: order - 1]
        nodes = [node for node, _ in past[: min(order, i + 1)]]
        for c, (_, eps) in zip(_lagrange_integrals(nodes, rho[i], rho[i + 1], v), past):
            u = u + c * eps
        x = cf.alpha(name, times[i + 1]) * u
    return x


def _vp_time(rho):
    """t of a VP noise level: int_0^t beta = log(1 + rho^2) (Karras et al. 2022, Table 1)."""
    d = cf.BETA_MAX - cf.BETA_MIN
    return (np.sqrt(cf.BETA_MIN**2 + 2 * d * np.log1p(rho**2)) - cf.BETA_MIN) / d


@pytest.mark.parametrize("variable, v", [("rho", lambda rho: rho), ("t", _vp_time)])
@pytest.mark.parametrize("order", [2, 3])
def test_rho_and_t_variants_integrate_their_lagrange_polynomials(plugins, variable, v,
                                                                 order):
    # On VP, down to sigma = 0: t(rho) is smooth in rho (t ~ rho^2 / beta_min near 0).
    model = cf.gaussian_data(make_sde("vp"))
    times = (1.0, 0.7, 0.45, 0.25, 0.1, 0.02, 0.0)
    x = cf.start()
    params = plugins.samplers.get("deis").make_params({"order": order, "variable": variable})
    out = plugins.samplers.get("deis")(model, x, TimeGrid.from_times(model.sde, times),
                                       None, params=params)
    torch.testing.assert_close(out, _deis_by_hand("vp", x, times, order, v),
                               rtol=1e-10, atol=1e-10)


def test_under_edm_t_is_rho(plugins):
    model = mixture_64d(make_sde("edm"))
    grid = make_grid(model.sde, "karras", 6)
    x = model.sde.prior_std * torch.randn(4, 64, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(1))
    runs = [plugins.samplers.get("deis")(model, x, grid, None, params=plugins.samplers.get(
        "deis").make_params({"variable": v})) for v in ("t", "rho")]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-11, atol=1e-11)


def test_the_first_order_step_is_ddim(plugins):
    # x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} (rho_{i+1} - rho_i) eps_i.
    model = cf.gaussian_data(make_sde("subvp"))
    grid = TimeGrid.from_times(model.sde, (1.0, 0.4))
    x = cf.start()
    out = plugins.samplers.get("deis")(model, x, grid, None)
    u, rho = x / cf.alpha("subvp", 1.0), noise_level("subvp", 1.0)
    eps = (u - cf.edm_denoiser(u, rho)) / rho
    expected = cf.alpha("subvp", 0.4) * (u + (noise_level("subvp", 0.4) - rho) * eps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# Order on the exact Gaussian flow: VP, steps uniform in t from 1 to 0.05.
ORDER_STEPS = (32, 64, 128, 256)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variable", ["t", "rho", "log_rho"])
def test_order_on_the_exact_gaussian_flow(plugins, order, variable):
    sampler = plugins.samplers.get("deis")
    params = sampler.make_params({"order": order, "variable": variable})
    model = cf.gaussian_data(make_sde("vp"))
    x = cf.start(batch=16)
    exact = exact_flow("vp", x, 1.0, 0.05)
    errors = []
    for steps in ORDER_STEPS:
        grid = TimeGrid.from_times(model.sde, np.linspace(1.0, 0.05, steps + 1))
        errors.append(float((sampler(model, x, grid, None, params=params) - exact)
                            .abs().max()))
    assert abs(fitted_order(ORDER_STEPS, errors) - order) <= 0.4, errors
    if params == sampler.make_params():
        assert order == sampler.capabilities.order
