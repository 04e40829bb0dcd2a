"""heun: Karras et al. 2022, Alg. 1, against closed-form steps on Gaussian data."""

from __future__ import annotations

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import ring_2d

from . import gaussian_closed_form as cf


def edm_heun(x, times):
    """Alg. 1 with sigma(t) = t, s(t) = 1 and the closed-form Gaussian denoiser."""
    for t_cur, t_next in zip(times[:-1], times[1:]):
        d_cur = (x - cf.edm_denoiser(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if t_next != 0:
            d_prime = (x_next - cf.edm_denoiser(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def test_edm_steps_follow_algorithm_1_with_the_exact_denoiser(plugins):
    model = cf.gaussian_data(make_sde("edm"))
    x0 = cf.start()
    out = plugins.samplers.get("heun")(model, x0.clone(), cf.grid(model.sde), noise=None)
    torch.testing.assert_close(out, edm_heun(x0, cf.TIMES["edm"]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_each_step_is_the_trapezoidal_pf_ode_update(plugins, name):
    # x' = x + h/2 [F(x, t) + F(x + h F(x, t), t + h)] with F the PF-ODE drift; the last
    # step is Euler when it lands on sigma = 0 (VP, sub-VP, EDM), not under VE.
    model = cf.gaussian_data(make_sde(name))
    x0 = cf.start()
    out = plugins.samplers.get("heun")(model, x0.clone(), cf.grid(model.sde), noise=None)
    expected, times = x0, cf.TIMES[name]
    for t_cur, t_next in zip(times[:-1], times[1:]):
        h = t_next - t_cur
        d_cur = cf.pf_ode_drift(name, expected, t_cur)
        euler = expected + h * d_cur
        if cf.kernel_variance(name, t_next) == 0:
            expected = euler
        else:
            expected = expected + h / 2 * (d_cur + cf.pf_ode_drift(name, euler, t_next))
    torch.testing.assert_close(out, expected, rtol=1e-11, atol=1e-11)


def test_the_callback_sees_every_step(plugins):
    model = cf.gaussian_data(make_sde("edm"))
    grid = cf.grid(model.sde)
    record = cf.Recorder()
    out = plugins.samplers.get("heun")(model, cf.start(), grid, noise=None, callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    torch.testing.assert_close(record.calls[0]["x"], edm_heun(cf.start(), grid.t[:2]),
                               rtol=1e-12, atol=1e-12)
    assert torch.equal(record.calls[-1]["x"], out)


def test_heun_calls_the_network_exactly_2n_minus_1_times(plugins):
    model = ring_2d(make_sde("edm"))
    heun = plugins.samplers.get("heun")
    for steps in (1, 2, 5, 18):
        counted = CountedModel(model)
        generate(counted, heun, make_grid(model.sde, "karras", steps), 0, range(8))
        assert counted.nfe.calls == 2 * steps - 1
        assert heun.expected_nfe(steps, heun.make_params()) == 2 * steps - 1


def test_heun_on_ve_never_lands_on_sigma_zero_so_every_step_is_second_order(plugins):
    model = ring_2d(make_sde("ve"))
    heun = plugins.samplers.get("heun")
    grid = make_grid(model.sde, "karras", 6)
    assert grid.sigma[-1] > 0
    counted = CountedModel(model)
    generate(counted, heun, grid, 0, range(4))
    assert counted.nfe.calls == 12 == heun.expected_nfe(6, heun.make_params(), False)


def test_declared_capabilities(plugins):
    # Order 2 is measured in test_convergence_order; NFE is counted above.
    caps = plugins.samplers.get("heun").capabilities
    assert (caps.stochastic, caps.order, caps.nfe_per_step, caps.final_step_nfe,
            caps.pf_ode) == (False, 2, 2, 1, True)
