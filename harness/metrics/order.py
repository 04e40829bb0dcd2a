"""A sampler's convergence order, measured: the slope of log error on log step count.

As torchsde's diagnostics do for SDE solvers, on problems with known answers:

* deterministic samplers: the strong (pathwise) error of the endpoint against a dopri5
  solution of the probability-flow ODE (rtol = atol = 1e-10) on the 64-D Gaussian mixture
  under VP, from 32 starting points, at `ODE_ORDER_STEPS` uniform-in-t steps;
* stochastic samplers: the weak error of E|x|^2 / D on a Gaussian N(0, 0.5^2 I) under VP,
  started from its exact marginal at T. Every sampler of the reverse-time family (ODE or
  SDE, any amount of extra noise) has the same exact law at every t, so the error left is
  the discretisation's. The x_T part of the Monte Carlo error is removed with the control
  variate |x_T|^2, whose mean is known; each error comes with its standard error.

The grids stop at t = `ORDER_T_END`, short of t = 0 where the score is stiff, so the
step counts are in the asymptotic regime of the built-in schemes (multistep schemes
start with a lower-order step: fewer steps would misread them).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from ..core.schedules import TimeGrid
from ..core.sde import make_sde
from ..models.oracle import GaussianMixture, mixture_64d

ODE_ORDER_STEPS = (32, 64, 128, 256)
WEAK_ORDER_STEPS = (16, 32, 64, 128)
ORDER_T_END = 0.05
#: The weak-order problem: samples x dimensions, and the data's standard deviation.
WEAK_SAMPLES, WEAK_DIM, WEAK_STD = 20000, 8, 0.5


class BatchNoise:
    """Standard normal draws from one generator: the order problems need many samples,
    not per-sample streams (their results are never compared across batchings)."""

    def __init__(self, seed: int, shape: tuple[int, ...], device: Any):
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.shape = shape
        self.draws = 0

    def __call__(self, like: Optional[Tensor] = None) -> Tensor:
        self.draws += 1
        shape = tuple(like.shape) if like is not None else self.shape
        return torch.randn(shape, generator=self.generator, device=self.device,
                           dtype=torch.float64)


def uniform_grid(sde: Any, steps: int) -> TimeGrid:
    """`steps` equal steps in t from T to `ORDER_T_END`."""
    return TimeGrid.from_times(sde, np.linspace(sde.T, ORDER_T_END, steps + 1))


def fitted_order(steps: Iterable[int], errors: Iterable[float]) -> float:
    """Minus the least-squares slope of log error against log step count."""
    return float(-np.polyfit(np.log(list(steps)), np.log(list(errors)), 1)[0])


def _sample(sampler: Any, params: Any, model: Any, x: Tensor, grid: TimeGrid,
            noise: Any) -> Tensor:
    with torch.no_grad():
        return sampler.fn(model, x.clone(), grid, noise, None, params)


def ode_order_errors(sampler: Any, params: Any, device: Any = "cpu") -> list[float]:
    """Largest endpoint distance to the dopri5 PF-ODE solution, per `ODE_ORDER_STEPS`."""
    from torchdiffeq import odeint

    model = mixture_64d(make_sde("vp")).to(device)
    x = torch.randn(32, 64, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(12)).to(device)
    ends = torch.tensor([model.sde.T, ORDER_T_END], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        exact = odeint(lambda t, y: model.ode_drift(y, t), x, ends, method="dopri5",
                       rtol=1e-10, atol=1e-10)[-1]
    noise = BatchNoise(0, tuple(x.shape), x.device)
    return [float((_sample(sampler, params, model, x, uniform_grid(model.sde, n), noise)
                   - exact).norm(dim=1).max()) for n in ODE_ORDER_STEPS]


def weak_order_errors(sampler: Any, params: Any, device: Any = "cpu"
                      ) -> list[tuple[float, float]]:
    """(error, standard error) of E|x|^2 / D at `ORDER_T_END`, relative to its exact
    value, per `WEAK_ORDER_STEPS`."""
    sde = make_sde("vp")
    model = GaussianMixture([1.0], torch.zeros(1, WEAK_DIM), [WEAK_STD], sde).to(device)

    def variance(t: float) -> float:  # of x_t = s(t) (x_0 + sigma(t) n)
        return float(sde.scale(t)) ** 2 * (WEAK_STD ** 2 + float(sde.sigma(t)) ** 2)

    v_start, v_end = variance(sde.T), variance(ORDER_T_END)
    shape = (WEAK_SAMPLES, WEAK_DIM)
    x = math.sqrt(v_start) * torch.randn(shape, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(13))
    x = x.to(device)
    found = []
    for n in WEAK_ORDER_STEPS:
        out = _sample(sampler, params, model, x, uniform_grid(sde, n),
                      BatchNoise(14, shape, x.device))
        excess = (out.pow(2).sum(1) - (v_end / v_start) * x.pow(2).sum(1)) / (WEAK_DIM * v_end)
        found.append((float(excess.mean()), float(excess.std()) / math.sqrt(WEAK_SAMPLES)))
    return found
