"""The reference implementations the built-in fast samplers are compared with, driven on
the harness's own grids, oracle and noise draws.

* k-diffusion (`k_diffusion.sampling`): works in the unscaled variable u = x / s(t) with
  a denoiser D(u; sigma), so a harness state is s(t) times a k-diffusion state at the
  same sigma. Not a dependency of the harness: tests that use it skip without it.
* diffusers' schedulers work in the VP variable sqrt(abar) u with abar = 1 / (1 + sigma^2);
  they are given the harness's sigma grid in place of their own quantised one.

A harness sampler's noise draws are recorded (`Recording`) and handed to the reference in
the same order (`Replay`), so that both see the same z at the same step.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from harness_plugins import kdiffusion_loading

from harness.core.noise import SampleNoise
from harness.plugin.manager import get_sampler

#: The processes every built-in sampler must work under.
PROCESSES = ("vp", "subvp", "ve", "edm")


def kdiffusion_sampling() -> types.ModuleType:
    """`k_diffusion.sampling`, or skip the test when k-diffusion is not installed.

    Loaded as the adapter loads it (`harness_plugins.kdiffusion_loading`): its package
    imports its training stack, which the samplers do not use; without it, `sampling.py`
    loads on its own.
    """
    loaded = kdiffusion_loading.load()
    if loaded is None:
        pytest.skip("k-diffusion (the reference implementation) is not installed")
    return loaded.module


class Recording:
    """A harness noise source that keeps every draw."""

    def __init__(self, noise):
        self.noise, self.draws = noise, []

    def __call__(self, like=None) -> torch.Tensor:
        z = self.noise(like)
        self.draws.append(z.clone())
        return z


class Replay:
    """The recorded draws in order, as k-diffusion's `noise_sampler(sigma, sigma_next)`."""

    def __init__(self, draws: list[torch.Tensor]):
        self.draws, self.used = list(draws), 0

    def __call__(self, *levels) -> torch.Tensor:
        self.used += 1
        return self.draws[self.used - 1]


def start(model, n: int = 8, seed: int = 0) -> torch.Tensor:
    """x_T as `generate` draws it: the first draw of each sample's stream."""
    return model.sde.prior_std * SampleNoise(seed, range(n), model.data.shape,
                                             dtype=model.dtype)()


def run_recorded(name: str, model, grid, x_T, params=None, seed: int = 1):
    """The harness sampler `name` from x_T, and the noise draws it made."""
    sampler = get_sampler(name)
    noise = Recording(SampleNoise(seed, range(x_T.shape[0]), model.data.shape,
                                  dtype=model.dtype))
    out = sampler(model, x_T.clone(), grid, noise, params=sampler.make_params(params))
    return out, noise.draws


def kdiffusion_run(fn, model, grid, x_T, **options) -> torch.Tensor:
    """A k-diffusion sampler on the grid's sigmas, in the unscaled variable, returned in
    the harness's variable."""
    sigmas = torch.tensor(grid.sigma, dtype=x_T.dtype)
    out = fn(lambda u, sigma: model.denoise(u, sigma), x_T / grid.scale[0], sigmas,
             disable=True, **options)
    return out * grid.scale[-1]


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference|."""
    return float((ours - reference).abs().max() / reference.abs().max())


def vp_abar(sigma: float) -> float:
    """abar of the VP process with noise level sigma in the unscaled variable."""
    return 1 / (1 + sigma**2)


def to_vp(x: torch.Tensor, grid, i: int) -> torch.Tensor:
    """Grid point i's harness state in diffusers' variable sqrt(abar) x / s."""
    return x / grid.scale[i] * math.sqrt(vp_abar(grid.sigma[i]))


def from_vp(x: torch.Tensor, grid, i: int) -> torch.Tensor:
    return x / math.sqrt(vp_abar(grid.sigma[i])) * grid.scale[i]
