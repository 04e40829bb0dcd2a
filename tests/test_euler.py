"""euler: the PF-ODE Euler baseline."""

from __future__ import annotations

import torch

from harness import generate, make_grid
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde


def test_one_step_is_x_plus_dt_times_the_pf_ode_drift(plugins):
    model = ring_2d(make_sde("vp"))
    grid = make_grid(model.sde, "uniform_t", 4)
    x = torch.randn(6, 2, dtype=torch.float64)
    out = plugins.samplers.get("euler")(model, x, grid, noise=None)
    expected = x
    for i in range(4):
        score = model.score(expected, grid.t[i])
        expected = expected + (grid.t[i + 1] - grid.t[i]) * model.sde.ode_drift(
            expected, grid.t[i], score)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_deterministic_given_the_initial_state(plugins):
    model = ring_2d(make_sde("edm"))
    euler = plugins.samplers.get("euler")
    grid = make_grid(model.sde, "karras", 8)
    model.nfe.reset()
    a = generate(model, euler, grid, 0, range(8))
    assert model.nfe.calls == 8
    assert torch.equal(a, generate(model, euler, grid, 0, range(8)))
