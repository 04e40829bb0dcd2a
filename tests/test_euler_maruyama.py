"""euler_maruyama: reverse-SDE Euler-Maruyama on the grid's own spacing."""

from __future__ import annotations

import math

import torch

from harness import make_grid
from harness.core.noise import SampleNoise
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde


def _run(plugins, keep_final_noise):
    model = ring_2d(make_sde("vp"))
    grid = make_grid(model.sde, "log_snr", 5)
    sampler = plugins.samplers.get("euler_maruyama")
    noise = SampleNoise(0, range(4), (2,), dtype=torch.float64)
    x = model.sde.prior_std * noise()
    params = sampler.make_params({"keep_final_noise": keep_final_noise})
    return model, grid, x.clone(), sampler(model, x, grid, noise, None, params)


def test_steps_use_the_grid_spacing_and_the_last_returns_the_mean(plugins):
    model, grid, x, out = _run(plugins, keep_final_noise=False)
    noise = SampleNoise(0, range(4), (2,), dtype=torch.float64)
    noise()  # the initial draw
    sde = model.sde
    for i in range(grid.steps):
        dt = grid.t[i + 1] - grid.t[i]
        x_mean = x + sde.reverse_drift(x, grid.t[i], model.score(x, grid.t[i])) * dt
        if i == grid.steps - 1:
            x = x_mean
        else:
            x = x_mean + sde.diffusion(grid.t[i]) * math.sqrt(-dt) * noise()
    torch.testing.assert_close(out, x, rtol=0, atol=0)


def test_keep_final_noise_adds_the_last_step_noise(plugins):
    *_, mean_out = _run(plugins, keep_final_noise=False)
    *_, noisy_out = _run(plugins, keep_final_noise=True)
    assert not torch.equal(mean_out, noisy_out)
