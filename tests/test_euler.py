"""euler: the PF-ODE Euler baseline, against closed-form steps on Gaussian data."""

from __future__ import annotations

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import ring_2d

from . import gaussian_closed_form as cf


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_each_step_is_dt_times_the_pf_ode_drift_of_song_et_al(plugins, name):
    # x_{i+1} = x_i + (t_{i+1} - t_i) [f(t_i) x_i - g(t_i)^2 / 2 score(x_i, t_i)] (Eq. 13).
    model = cf.gaussian_data(make_sde(name))
    x0 = cf.start()
    out = plugins.samplers.get("euler")(model, x0.clone(), cf.grid(model.sde), noise=None)
    expected, times = x0, cf.TIMES[name]
    for t_cur, t_next in zip(times[:-1], times[1:]):
        expected = expected + (t_next - t_cur) * cf.pf_ode_drift(name, expected, t_cur)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_one_edm_step_shrinks_the_offset_from_the_mean_by_the_closed_form_factor(plugins):
    # EDM on N(mu, s0^2 I): dx/dt = t (x - mu) / (s0^2 + t^2), so one Euler step is
    # x_1 - mu = (x_0 - mu) (1 + (t_1 - t_0) t_0 / (s0^2 + t_0^2)).
    model = cf.gaussian_data(make_sde("edm"))
    t0, t1 = 2.0, 0.5
    x0 = cf.start()
    out = plugins.samplers.get("euler")(model, x0.clone(), cf.grid(model.sde, (t0, t1)),
                                        noise=None)
    factor = 1 + (t1 - t0) * t0 / (cf.S0**2 + t0**2)
    torch.testing.assert_close(out, cf.mu() + factor * (x0 - cf.mu()), rtol=1e-13, atol=1e-13)


def test_the_callback_sees_every_step_with_its_index_time_and_state(plugins):
    model = cf.gaussian_data(make_sde("vp"))
    grid = cf.grid(model.sde)
    record = cf.Recorder()
    euler = plugins.samplers.get("euler")
    out = euler(model, cf.start(), grid, noise=None, callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    for i, call in enumerate(record.calls):
        prefix = type(grid)(grid.t[:i + 2], grid.sigma[:i + 2], grid.scale[:i + 2])
        torch.testing.assert_close(call["x"], euler(model, cf.start(), prefix, noise=None),
                                   rtol=0, atol=0)
    assert torch.equal(record.calls[-1]["x"], out)


def test_one_evaluation_per_step_and_no_noise(plugins):
    model = ring_2d(make_sde("edm"))
    euler = plugins.samplers.get("euler")
    grid = make_grid(model.sde, "karras", 8)
    counted = CountedModel(model)
    a = generate(counted, euler, grid, 0, range(8))
    assert counted.nfe.calls == 8 == euler.expected_nfe(8, euler.make_params())
    assert torch.equal(a, generate(model, euler, grid, 0, range(8)))


def test_declared_capabilities(plugins):
    # Order 1 is measured in test_convergence_order; NFE and determinism are checked above.
    caps = plugins.samplers.get("euler").capabilities
    assert (caps.stochastic, caps.order, caps.nfe_per_step, caps.final_step_nfe,
            caps.pf_ode) == (False, 1, 1, None, True)
