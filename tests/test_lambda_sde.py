"""lambda_sde: the reverse-SDE family between the PF-ODE (lam=0) and reverse SDE (lam=1)."""

from __future__ import annotations

import torch

from harness import generate, make_grid
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde


def test_lambda_zero_is_euler_and_lambda_one_is_euler_maruyama_in_distribution(plugins):
    model = ring_2d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 10)
    lam = plugins.samplers.get("lambda_sde")
    ode = generate(model, lam, grid, 0, range(16), params=lam.make_params({"lam": 0.0}))
    euler = generate(model, plugins.samplers.get("euler"), grid, 0, range(16))
    torch.testing.assert_close(ode, euler, rtol=1e-12, atol=1e-12)
    sde_run = generate(model, lam, grid, 0, range(16), params=lam.make_params({"lam": 1.0}))
    em = generate(model, plugins.samplers.get("euler_maruyama"), grid, 0, range(16))
    torch.testing.assert_close(sde_run, em, rtol=1e-12, atol=1e-12)
