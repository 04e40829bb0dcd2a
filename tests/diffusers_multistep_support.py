"""Drive a diffusers multistep scheduler (UniPC, DEIS) on a harness grid with an exact model.

diffusers' VP-family schedulers step the state y = alpha (x_0 + sigma n), alpha(sigma) =
1 / sqrt(1 + sigma^2), and their update reads nothing but their `sigmas` list: the
integer timesteps only index it. Their public `set_timesteps` quantises the noise levels
to integer training steps and stores them in float32, which alone would cost ~1e-7 in
the comparison. So the scheduler is built as a user builds it (`set_timesteps(N)`), then
its `sigmas` are replaced by the harness grid's, in float64, and its step counter pinned
to 0: the library's update formulas run unchanged on exactly the harness's noise levels.
The model output handed to it is the oracle's exact data prediction at that sigma
(`prediction_type="sample"`).

A harness state x = s(t) u under any process maps to y = alpha(sigma) u; under VP,
s(t) = alpha(sigma(t)) and the map is the identity. The data-prediction updates are
written in u, so the harness's output must equal y_N / alpha(sigma_N) * s(t_N) for every
process: the comparison also checks that the harness applies s(t) correctly.
"""

from __future__ import annotations

import math

import torch


def alpha(sigma: float) -> float:
    return 1 / math.sqrt(1 + sigma * sigma)


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference|."""
    return float((ours - reference).abs().max() / reference.abs().max())


def run_scheduler(scheduler, model, x, grid):
    """Every state of the scheduler's run from x on `grid`, mapped to the harness's
    variable, and the data predictions it was given."""
    steps = grid.steps
    scheduler.set_timesteps(steps)
    assert len(scheduler.timesteps) == steps
    scheduler.sigmas = torch.tensor(grid.sigma, dtype=torch.float64)
    scheduler.set_begin_index(0)
    y = x / grid.scale[0] * alpha(grid.sigma[0])
    states, denoised = [], []
    for i in range(steps):
        u = y / alpha(grid.sigma[i])
        d = model._denoise(u, torch.full((x.shape[0],), grid.sigma[i], dtype=x.dtype))
        denoised.append(d)
        y = scheduler.step(d, scheduler.timesteps[i], y).prev_sample
        states.append(y / alpha(grid.sigma[i + 1]) * grid.scale[i + 1])
    return states, denoised


def run_harness(sampler, model, x, grid, params):
    """Every state of the harness sampler's run (through its callback)."""
    seen = []
    sampler(model, x.clone(), grid, noise=None, callback=lambda info: seen.append(info["x"]),
            params=params)
    return seen
