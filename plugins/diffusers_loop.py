"""One diffusers scheduler class run as it is, as a harness sampler function.

The loop is a diffusers pipeline's (e.g. `DDIMPipeline.__call__`), around the harness's
model and noise:

1. a fresh scheduler per call (per trial and batch, so no step index, multistep history
   or Brownian tree outlives it), built with the suite's settings and the model's
   process (`harness_plugins.diffusers_tables`);
2. `set_timesteps(grid.steps)`: the scheduler's own timesteps and spacing. Only the
   grid's step count is used: the suite's schedule does not apply to these samplers,
   nor does the grid's last level (they stop where their own schedule ends, at sigma = 0
   or at their smallest level, also under VE);
3. the initial sample (x_T / prior_std) init_noise_sigma: the harness's first
   standard-normal draw of each sample, scaled as a pipeline scales its latents;
4. for each timestep: `scale_model_input`, one network call (`model.denoise` at the
   level the update assumes, its output converted as `harness_plugins.diffusers_network`
   says), `step`;
5. the last sample, read as the clean data (as the pipelines return it), is the output
   x_0 = s(0) sample.

The callback runs after each of the scheduler's steps (a two-stage or warm-up step
after its last call) with i, the state x in the harness's variable at its noise level
and that level's time t, read when the network next sees it (after the last step: the
output, at t = 0).

The state stays in the harness's dtype: float64 on the oracles, except where diffusers
rounds it (Euler, EulerAncestral, EDMEuler and DPM-Solver multistep cast the sample to
float32 inside `step`); its tables and levels are float32 throughout.

Noise (`harness_plugins.diffusers_params.NOISE`): a `step` that takes `variance_noise`
gets each sample's next harness draw; one that only takes a `generator` gets one torch
generator per sample, seeded from that sample's next draw (a list of generators is how
diffusers draws per batch element; CosineDPMSolverMultistep seeds its Brownian trees from
the first of them); DPMSolverSDE's Brownian tree is given one seed per sample from the
first draw (`noise_sampler_seed` takes a list). Either way a sample's noise depends on
its own stream only, not on its batch.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from harness import ParameterError

from .diffusers_network import Convention
from .diffusers_params import FIXED, arguments
from .diffusers_tables import alphas_cumprod, noise_range, trained_betas


class SchedulerSampler:
    """The sampler function of one registration: `fn(model, x, grid, noise, callback,
    params)`, with its scheduler class's loop (see the module docstring)."""

    def __init__(self, name: str, scheduler_class: type, convention: Convention,
                 init_args: tuple[str, ...], step_args: tuple[str, ...], noise: str,
                 summary: str):
        self.name = name
        self.scheduler_class = scheduler_class
        self.convention = convention
        self.init_args, self.step_args = init_args, step_args
        #: How noise gets in: "variance_noise", "generator", "noise_sampler_seed", "".
        self.noise = noise
        self.__doc__ = summary
        self._calls: dict[tuple[str, int], int] = {}

    def scheduler(self, params: Any, sde: Any = None, seeds: list[int] | None = None
                  ) -> Any:
        """A fresh scheduler with these settings, built for the process `sde` (None: on
        the class's own table, which only counting may use)."""
        config = {name: getattr(params, name) for name in self.init_args}
        config.update(harness_config(self.scheduler_class, self.convention, sde))
        if seeds is not None:
            config["noise_sampler_seed"] = seeds
        return self.scheduler_class(**config)

    def calls(self, params: Any, steps: int) -> int:
        """Network calls of a run of `steps` steps: one per entry of the scheduler's
        timesteps (Heun's and the KDPM2s' repeated ones, PNDM's warm-up included)."""
        key = (repr(params), steps)
        if key not in self._calls:
            with _library_quiet():
                scheduler = self.scheduler(params)
                self._calls[key] = len(self.timesteps(scheduler, steps))
        return self._calls[key]

    def timesteps(self, scheduler: Any, steps: int, device: Any = None) -> Tensor:
        """The scheduler's timesteps for `steps` steps; a step count it cannot take (PNDM's
        warm-up needs 4, LCM's at most its 50 original steps) as a ParameterError."""
        try:
            scheduler.set_timesteps(steps, device=device)
        except ValueError as err:
            raise ParameterError(f"{self.name} cannot run {steps} step(s) with these "
                                 f"settings: {err}") from None
        return scheduler.timesteps

    def __call__(self, model: Any, x: Tensor, grid: Any, noise: Callable[..., Tensor],
                 callback: Any, params: Any) -> Tensor:
        sde = model.sde
        seeds = seeds_of(noise(x)) if self.noise == "noise_sampler_seed" else None
        scheduler = self.scheduler(params, sde, seeds)
        timesteps = self.timesteps(scheduler, grid.steps, x.device)
        sample = x / sde.prior_std * float(scheduler.init_noise_sigma)
        settings = {name: getattr(params, name) for name in self.step_args}
        ended, pending = 0, None  # steps ended; one whose state awaits its level
        for k, timestep in enumerate(timesteps):
            scheduler.scale_model_input(sample, timestep)  # sets the step's state
            level = self.convention.sigma(scheduler, timestep)
            sigma = float(level)
            u = self.convention.unscaled(sample, sigma)
            if callback is not None and pending is not None:
                t = float(sde.t_of_sigma(sigma))
                callback({"i": pending, "t": t, "x": sde.scale(t) * u})
            pending = None
            denoised = model.denoise(u, sigma)
            output = self.convention.prediction(scheduler, u, denoised, level)
            sample = scheduler.step(output, timestep, sample, **settings,
                                    **self.noise_for(noise, sample)).prev_sample
            if k < len(timesteps) - 1 and self.convention.step_ended(scheduler):
                pending, ended = ended, ended + 1
        out = sde.scale(0.0) * sample
        if callback is not None:
            callback({"i": ended, "t": 0.0, "x": out})
        return out

    def levels(self, params: Any, sde: Any, steps: int) -> list[float]:
        """The noise levels at which a run of `steps` steps on a model of process `sde`
        calls the network, in order: what a plan can show in place of the grid, which
        these samplers do not follow. (A run on one zero-valued sample.)"""
        probe = _LevelProbe(sde)
        self(probe, torch.zeros(1, 1, dtype=torch.float64), SimpleNamespace(steps=steps),
             torch.zeros_like, None, params)
        return probe.levels

    def noise_for(self, noise: Callable[..., Tensor], sample: Tensor) -> Mapping[str, Any]:
        """What `step` draws its noise from: the next harness draw of every sample."""
        if self.noise == "variance_noise":
            return {"variance_noise": noise(sample)}
        if self.noise == "generator":
            return {"generator": [torch.Generator().manual_seed(seed)
                                  for seed in seeds_of(noise(sample))]}
        return {}


class _LevelProbe:
    """A model of process `sde` that records the level of each call and denoises to 0."""

    def __init__(self, sde: Any):
        self.sde = sde
        self.levels: list[float] = []

    def denoise(self, u: Tensor, sigma: float) -> Tensor:
        self.levels.append(sigma)
        return torch.zeros_like(u)


def harness_config(scheduler_class: type, convention: Convention, sde: Any
                   ) -> dict[str, Any]:
    """The constructor arguments the harness sets: the model's process (a training
    table, or an EDM scheduler's sigma range) and the fixed values of `FIXED`."""
    accepted = {p.name for p in arguments(scheduler_class)[0]}
    config = {k: v for k, v in FIXED.items() if k in accepted}
    if sde is None:
        return config
    if convention.preconditioned:
        config["sigma_min"], config["sigma_max"] = noise_range(sde)
        return config
    return {**config, **_table_config(sde)}


#: Each process's table arguments, computed once (a search over its 1000 levels).
_TABLES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _table_config(sde: Any) -> dict[str, Any]:
    """num_train_timesteps and trained_betas for the process."""
    if sde not in _TABLES:
        table = alphas_cumprod(sde)
        _TABLES[sde] = {"num_train_timesteps": len(table),
                        "trained_betas": trained_betas(table)}
    return dict(_TABLES[sde])


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """What diffusers says while a scheduler is built to count its calls (its logger's
    notes on the configuration, DPM-Solver changing lower_order_final; NumPy's
    deprecations of its arithmetic on tensors, thousands for a KDPM2) belongs to the run
    that uses it, not to a listing or a plan."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def seeds_of(draw: Tensor) -> list[int]:
    """A 64-bit seed per sample: the float32 bits of the first two values of its draw."""
    first = draw.detach().flatten(1)[:, :2].to(device="cpu", dtype=torch.float32)
    words = (first.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF).tolist()
    return [sum(word << (32 * k) for k, word in enumerate(row)) for row in words]
