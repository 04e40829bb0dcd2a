"""ddim and ddim_eta: against diffusers' DDIMScheduler on the same grid and noise draws,
on the 64-D Gaussian mixture in float64, under every process.

diffusers steps a discrete chain t = N-1, ..., 0 over its table `alphas_cumprod`: with N
training steps and N inference steps ("leading" spacing, stride 1) step k reads
alphas_cumprod[k] and [k - 1] (final_alpha_cumprod after k = 0). Filling that table with
abar = 1 / (1 + sigma^2) at the harness's grid points makes it step exactly between them,
in the VP variable sqrt(abar) x / s; its network output is the noise prediction
(x / s - D) / sigma. Nothing is quantised: every process is compared, VE's final
sigma_min > 0 included.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness import generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d

from .reference_support import (PROCESSES, from_vp, relative_difference, run_recorded,
                                start, to_vp, vp_abar)

TOLERANCE = 1e-8


def diffusers_ddim(model, grid, x_T, eta, draws):
    """DDIMScheduler.step along the harness's grid; `draws` feed its variance noise."""
    diffusers = pytest.importorskip("diffusers")
    n = grid.steps
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=n, clip_sample=False,
                                        set_alpha_to_one=True, prediction_type="epsilon",
                                        timestep_spacing="leading", steps_offset=0)
    abar = [vp_abar(s) for s in grid.sigma]
    scheduler.alphas_cumprod = torch.tensor(abar[:n][::-1], dtype=torch.float64)
    scheduler.final_alpha_cumprod = torch.tensor(abar[n], dtype=torch.float64)
    scheduler.set_timesteps(n)
    assert scheduler.timesteps.tolist() == list(range(n - 1, -1, -1))
    draws = iter(draws)
    x = to_vp(x_T, grid, 0)
    for i, timestep in enumerate(scheduler.timesteps):
        u = x / math.sqrt(abar[i])
        eps = (u - model.denoise(u, grid.sigma[i])) / grid.sigma[i]
        # The harness draws no noise for a step that adds none (to sigma = 0, or eta = 0).
        z = next(draws) if eta > 0 and grid.sigma[i + 1] > 0 else torch.zeros_like(x)
        x = scheduler.step(eps, timestep, x, eta=eta, variance_noise=z).prev_sample
    assert next(draws, None) is None, "the harness drew noise diffusers did not use"
    return from_vp(x, grid, n)


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("name, params, eta", [
    ("ddim", {}, 0.0),
    ("ddim_eta", {}, 1.0),
    ("ddim_eta", {"eta": 0.4}, 0.4),
])
def test_equals_diffusers_ddim_scheduler(name, params, eta, process, steps):
    model = mixture_64d(make_sde(process))
    grid = make_grid(model.sde, "karras", steps)
    x_T = start(model)
    ours, draws = run_recorded(name, model, grid, x_T, params)
    reference = diffusers_ddim(model, grid, x_T, eta, draws)
    assert relative_difference(ours, reference) <= TOLERANCE


def test_ddim_is_ddim_eta_at_eta_zero(plugins):
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "log_snr", 10)
    eta_zero = plugins.samplers.get("ddim_eta").make_params({"eta": 0.0})
    a = generate(model, plugins.samplers.get("ddim"), grid, 0, range(8))
    b = generate(model, plugins.samplers.get("ddim_eta"), grid, 0, range(8), eta_zero)
    assert torch.equal(a, b)


def test_the_last_step_to_sigma_zero_returns_the_denoised_estimate(plugins):
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 5)
    seen = []
    out = generate(model, plugins.samplers.get("ddim_eta"), grid, 0, range(4),
                   callback=seen.append)
    assert torch.equal(out, grid.scale[-1] * seen[-1]["denoised"])
