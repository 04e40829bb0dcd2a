"""euler_ancestral: against k-diffusion's `sample_euler_ancestral` on the same sigma grid
and noise draws, on the 64-D Gaussian mixture in float64, under every process (compared in
k-diffusion's unscaled variable x / s(t)).
"""

from __future__ import annotations

import pytest
import torch

from harness import generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d

from .reference_support import (PROCESSES, Replay, kdiffusion_run, kdiffusion_sampling,
                                relative_difference, run_recorded, start)

TOLERANCE = 1e-8


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("params", [{}, {"eta": 0.3, "s_noise": 1.1}, {"eta": 0.0}])
def test_equals_kdiffusion_sample_euler_ancestral(params, process, steps):
    kd = kdiffusion_sampling()
    model = mixture_64d(make_sde(process))
    grid = make_grid(model.sde, "karras", steps)
    x_T = start(model)
    ours, draws = run_recorded("euler_ancestral", model, grid, x_T, params)
    # k-diffusion draws on every step to sigma > 0, also when eta = 0 adds nothing.
    draws = draws or [torch.zeros_like(x_T)] * steps
    replay = Replay(draws)
    reference = kdiffusion_run(kd.sample_euler_ancestral, model, grid, x_T,
                               noise_sampler=replay, **params)
    assert replay.used == len(draws) or not params.get("eta", 1.0)
    assert relative_difference(ours, reference) <= TOLERANCE


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_is_ddim_with_the_same_eta(plugins, eta):
    # The Euler step to sigma_down is D + sigma_down (u - D) / sigma: DDIM's update.
    model = mixture_64d(make_sde("subvp"))
    grid = make_grid(model.sde, "karras", 12)
    ancestral = plugins.samplers.get("euler_ancestral")
    ddim = plugins.samplers.get("ddim_eta")
    a = generate(model, ancestral, grid, 0, range(8), ancestral.make_params({"eta": eta}))
    b = generate(model, ddim, grid, 0, range(8), ddim.make_params({"eta": eta}))
    # Float64 rounding, amplified over 12 noisy steps: 1.5e-12 apart on one CPU.
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
