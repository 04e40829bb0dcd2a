"""One k-diffusion `sample_*` function called as a harness sampler, on the harness's grid.

k-diffusion (Crowson 2022) works in the unscaled variable u = x / s(t) with a denoiser
D(u; sigma), the harness's `model.denoise`; the harness's state is x = s(t) u. So a
function is called as

    u_N = sample_<name>(model.denoise, x_0 / s(t_0), sigmas, ...),    x_N = s(t_N) u_N,

with `sigmas` the grid's noise levels, its final 0 included, in the state's dtype and
on its device. Every call k-diffusion makes to the model is one counted evaluation.

* Noise. A stochastic sampler's function taking `noise_sampler` gets the samples' own
  harness streams, `noise_sampler(sigma, sigma_next) = noise(x)`: a sample's draws do
  not depend on its batch. (A deterministic one, dpm_fast at eta = 0, which multiplies
  its draws by 0, gets zeros: it draws nothing.) That replaces k-diffusion's Brownian
  tree (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde) by independent draws per call: the same
  law where the calls cover disjoint intervals, one per step, but not for dpmpp_sde,
  which draws over a step's first part and then over the whole step, two increments
  the tree correlates. The churn of euler, heun and dpm_2 (Karras et al. 2022, Alg. 2)
  is drawn with `torch.randn_like` from torch's global generator, which no argument
  replaces: that generator is seeded from a draw of the samples' streams and restored
  afterwards, so a run is reproducible and leaves the caller's generator as it was,
  but a sample's churn depends on the rest of its batch. (They draw it on every step,
  also without churn, and discard it: the deterministic samplers restore the generator
  too.) The registered samplers' `noise` parameter says which of these applies
  (`kdiffusion_samplers.NOISE`).
* Grid. `sample_dpm_fast(model, x, sigma_min, sigma_max, n)` takes no grid: it is given
  the grid's first and smallest positive noise levels and n = the grid's steps, and
  spends exactly n evaluations on floor(n / 3) + 1 steps of its own, uniform in
  log sigma. It cannot reach sigma = 0; its state at sigma_min is returned as the
  sample. It builds its times with `torch.tensor(float)`: float32, whatever the
  state's dtype.
* Callback. k-diffusion reports the state at the start of each step (after a churn
  step's added noise); the harness reports each step's end. The report of step i's
  start is passed on as the end of step i - 1, and the returned state as the end of
  the last step, each at the time of its noise level: a grid time, except after
  churn and for dpm_fast, whose noise levels are converted with `sde.t_of_sigma`
  (reading them on the host).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from harness import ParameterError

from . import kdiffusion_loading


class KDiffusionSampler:
    """`k_diffusion.sampling.sample_<function>` in the harness's sampler call shape."""

    def __init__(self, function: str, summary: str, *, stochastic: bool, on_grid: bool,
                 noise_sampler: bool, global_rng: bool,
                 passed: Callable[[Any], dict[str, Any]]):
        """`stochastic`: registered as drawing noise; `on_grid`: the function takes
        `sigmas` (else dpm_fast's end points and n); `noise_sampler`: it takes one;
        `global_rng`: it draws from torch's global generator; `passed`: the keyword
        arguments to pass for the sampler's params."""
        self.function = function
        self.__doc__ = summary
        self.stochastic, self.on_grid = stochastic, on_grid
        self.noise_sampler, self.global_rng = noise_sampler, global_rng
        self.passed = passed

    def __call__(self, model, x, grid, noise, callback, params):
        module = kdiffusion_loading.load().module
        sample = getattr(module, kdiffusion_loading.PREFIX + self.function)
        u = x / grid.scale[0]
        options = self.passed(params)
        if self.noise_sampler:
            draw = noise if self.stochastic else torch.zeros_like
            options["noise_sampler"] = lambda sigma, sigma_next: draw(u)
        if self.on_grid:
            where = (torch.tensor(grid.sigma, dtype=x.dtype, device=x.device),)
        else:
            where = end_points(grid)
        ends = StepEnds(callback, grid, model.sde, self.on_grid) if callback else None
        with self._global_rng(noise, u):
            u = sample(model.denoise, u, *where, callback=ends, disable=True, **options)
        if ends is not None:
            ends.finish(u)
        return grid.scale[-1] * u

    @contextlib.contextmanager
    def _global_rng(self, noise: Callable[[Tensor], Tensor], u: Tensor) -> Iterator[None]:
        """The generator the function draws from, seeded from the samples' streams where
        its draws are used, and restored afterwards."""
        if not self.global_rng:
            yield
            return
        generator = global_generator(u.device)
        state = generator.get_state()
        try:
            if self.stochastic:
                generator.manual_seed(seed_of(noise(u)))
            yield
        finally:
            generator.set_state(state)


def end_points(grid) -> tuple[float, float, int]:
    """dpm_fast's (sigma_min, sigma_max, n): the grid's smallest positive and its first
    noise level, and its steps."""
    sigma_min = min(s for s in grid.sigma if s > 0)
    if sigma_min == grid.sigma[0]:
        raise ParameterError("k-diffusion's dpm_fast needs two positive noise levels on "
                             "the grid: one step to sigma = 0 has one")
    return sigma_min, grid.sigma[0], grid.steps


def global_generator(device: torch.device) -> torch.Generator:
    """The generator `torch.randn_like` draws from on `device`."""
    if device.type == "cpu":
        return torch.default_generator
    module = torch.get_device_module(device.type)
    index = device.index if device.index is not None else module.current_device()
    return module.default_generators[index]


def seed_of(draw: Tensor) -> int:
    """A 64-bit seed that is a function of the draw's values."""
    data = draw.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class StepEnds:
    """The harness's callback (i, t, x after each step) fed by k-diffusion's, which
    reports each step's starting state."""

    def __init__(self, callback: Callable[[dict], None], grid, sde, on_grid: bool):
        self.callback, self.grid, self.sde, self.on_grid = callback, grid, sde, on_grid
        self.started: int | None = None

    def __call__(self, info: dict) -> None:
        i = int(info["i"])
        if i > 0:
            t, scale = self._time(i, info)
            self.callback({"i": i - 1, "t": t, "x": scale * info["x"]})
        self.started = i

    def finish(self, u: Tensor) -> None:
        self.callback({"i": self.started, "t": self.grid.t[-1],
                       "x": self.grid.scale[-1] * u})

    def _time(self, i: int, info: dict) -> tuple[float, float]:
        """(t, s(t)) of the reported state's noise level."""
        if self.on_grid and bool(info["sigma_hat"] == info["sigma"]):
            return self.grid.t[i], self.grid.scale[i]
        t = float(self.sde.t_of_sigma(float(info["sigma_hat"])))
        return t, float(self.sde.scale(t))
