"""ipndm: every step against the Adams-Bashforth formula, and its order on the exact Gaussian
flow.

No library ships iPNDM in a form to call, so each step is checked against the formula
written from the paper with the closed-form Gaussian denoiser (`gaussian_closed_form`):
the slope d = (u - D(u; sigma)) / sigma of the unscaled u = x / alpha(t) at every
recorded state, combined with the AB weights of the step's order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import TimeGrid
from harness.core.sde import make_sde

from . import gaussian_closed_form as cf
from .gaussian_flow_support import exact_flow, fitted_order, noise_level

#: The weights, newest slope first, as PNDM and the DEIS paper's iPNDM write them.
WEIGHTS = {1: [1], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
           4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def _states(plugins, name, times, **options):
    model = cf.gaussian_data(make_sde(name))
    sampler = plugins.samplers.get("ipndm")
    x = cf.start()
    seen = []
    sampler(model, x, TimeGrid.from_times(model.sde, times), None,
            callback=lambda info: seen.append(info["x"]), params=sampler.make_params(options))
    return [x] + seen


@pytest.mark.parametrize("name, times", [
    ("edm", (6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0)),         # uniform in sigma
    ("vp", (1.0, 0.7, 0.5, 0.35, 0.2, 0.1, 0.02, 0.0)),   # a general grid, with s(t)
    ("ve", (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)),               # ends at sigma_min > 0
])
@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_each_step_is_the_adams_bashforth_step_of_its_order(plugins, name, times, max_order):
    states = _states(plugins, name, times, max_order=max_order)
    slopes = []
    for i in range(len(times) - 1):
        sigma, sigma_next = noise_level(name, times[i]), noise_level(name, times[i + 1])
        u = states[i] / cf.alpha(name, times[i])
        slopes.insert(0, (u - cf.edm_denoiser(u, sigma)) / sigma)
        k = min(max_order, i + 1)
        expected = u + (sigma_next - sigma) * sum(b * d for b, d in zip(WEIGHTS[k], slopes))
        torch.testing.assert_close(states[i + 1], cf.alpha(name, times[i + 1]) * expected,
                                   rtol=1e-13, atol=1e-13)


def test_one_fourth_order_step_on_a_uniform_grid(plugins):
    # Step 4 of a grid uniform in sigma: u_4 = u_3 + h (55 d_3 - 59 d_2 + 37 d_1 - 9 d_0) / 24.
    times = (6.0, 5.0, 4.0, 3.0, 2.0)
    u = _states(plugins, "edm", times)
    d = [(u[i] - cf.edm_denoiser(u[i], times[i])) / times[i] for i in range(4)]
    torch.testing.assert_close(u[4], u[3] - (55 * d[3] - 59 * d[2] + 37 * d[1] - 9 * d[0]) / 24,
                               rtol=1e-13, atol=1e-13)


def test_lower_order_final_makes_the_step_to_zero_return_the_denoised_estimate(plugins):
    times = (1.0, 0.5, 0.2, 0.05, 0.0)
    plain, euler = (_states(plugins, "vp", times, lower_order_final=flag)
                    for flag in (False, True))
    for a, b in zip(plain[:-1], euler[:-1]):
        assert torch.equal(a, b)
    u = euler[-2] / cf.alpha("vp", 0.05)
    torch.testing.assert_close(euler[-1], cf.edm_denoiser(u, noise_level("vp", 0.05)),
                               rtol=1e-13, atol=1e-13)
    assert not torch.allclose(plain[-1], euler[-1])


def _errors(plugins, max_order, times_for, counts):
    sampler = plugins.samplers.get("ipndm")
    params = sampler.make_params({"max_order": max_order})
    model = cf.gaussian_data(make_sde("edm"))
    x = cf.start(batch=16)
    errors = []
    for steps in counts:
        times = times_for(steps)
        exact = exact_flow("edm", x, times[0], times[-1])
        out = sampler(model, x, TimeGrid.from_times(model.sde, times), None, params=params)
        errors.append(float((out - exact).abs().max()))
    return errors


ORDER_STEPS = (64, 128, 256, 512)


@pytest.mark.parametrize("max_order, expected", [(1, 1.0), (2, 2.0), (3, 2.0), (4, 2.0)])
def test_fixed_weights_converge_like_h2_on_a_geometric_grid(plugins, max_order, expected):
    # The AB weights of equal steps on unequal ones err by O(h^3) a step: order 2 at most.
    errors = _errors(plugins, max_order, lambda n: np.geomspace(80.0, 0.2, n + 1),
                     ORDER_STEPS)
    assert abs(fitted_order(ORDER_STEPS, errors) - expected) <= 0.15, errors


def test_higher_orders_are_more_accurate_on_a_grid_uniform_in_sigma(plugins):
    # Uniform in sigma each step is the true AB-k step; the first, Euler warm-up step
    # still leaves an O(h^2) error, so the gain shows at fixed steps, not in the slope.
    errors = [_errors(plugins, k, lambda n: np.linspace(3.0, 0.5, n + 1), [64])[0]
              for k in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True)
    assert errors[3] < errors[0] / 300, errors
