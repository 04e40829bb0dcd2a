"""A sampler's convergence order, measured: the slope of log error on log step count.

As torchsde's diagnostics do for SDE solvers, on problems with known answers:

* deterministic samplers: the strong (pathwise) error of the endpoint against a dopri5
  solution of the probability-flow ODE (rtol = atol = 1e-10) on the 64-D Gaussian mixture
  under VP, from 32 starting points, at `ODE_ORDER_STEPS` uniform-in-t steps;
* stochastic samplers: the weak error of E|x|^2 / D on a Gaussian N(0, 0.5^2 I) under VP,
  started from its exact marginal at T. Every sampler of the reverse-time family (ODE or
  SDE, any amount of extra noise) has the same exact law at every t, so the error left is
  the discretisation's. Its denoiser is linear, so a sampler built from model
  evaluations and linear operations on the state and its noise is an affine map of
  (x_T, z_1, ..., z_K): `exact_weak_errors` reads that map off the sampler (one batch
  row per unit input), checks it on random inputs, and computes E|x|^2 from it, with
  no sampling error. A sampler that is not affine there (a step size from norms of the
  state) gets `monte_carlo_weak_errors`: the x_T part of the Monte Carlo error is
  removed with the control variate |x_T|^2, whose mean is known, and each error comes
  with its standard error (about 0.005).

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
#: Exact weak errors: the largest distance, relative to 1 + max |y|, allowed between the
#: sampler's output at random inputs and the affine map read off it. Float64 rounding of
#: an affine sampler leaves at most 5e-16 (the built-ins); a map that is not affine misses
#: by O(1) or more (predictor_corrector: 3e29).
AFFINE_RTOL = 1e-9


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


class _UnitNoise:
    """Draw k of a batch laid out for `exact_weak_errors`: e_j in row `first + k D + j`,
    zero elsewhere; or zero everywhere (`first` None), to count the draws."""

    def __init__(self, shape: tuple[int, int], first: Optional[int], device: Any):
        self.shape, self.first, self.device = shape, first, device
        self.draws = 0

    def __call__(self, like: Optional[Tensor] = None) -> Tensor:
        if like is not None and tuple(like.shape) != self.shape:
            raise _NotAffine(f"noise drawn with shape {tuple(like.shape)}")
        z = torch.zeros(self.shape, dtype=torch.float64, device=self.device)
        if self.first is not None:
            row = self.first + self.draws * WEAK_DIM
            if row + WEAK_DIM > self.shape[0]:
                raise _NotAffine("more noise draws than from x_T = 0")
            z[row: row + WEAK_DIM] = torch.eye(WEAK_DIM, dtype=torch.float64)
        self.draws += 1
        return z


class _NotAffine(Exception):
    """The sampler's output is not an affine map of (x_T, z_1, ..., z_K) we can read."""


class _RecordedNoise(BatchNoise):
    def __init__(self, seed: int, shape: tuple[int, ...], device: Any):
        super().__init__(seed, shape, device)
        self.drawn: list[Tensor] = []

    def __call__(self, like: Optional[Tensor] = None) -> Tensor:
        z = super().__call__(like)
        self.drawn.append(z)
        return z


def _weak_problem(device: Any) -> tuple[GaussianMixture, float, float]:
    """The weak-order model N(0, WEAK_STD^2 I) under VP, and the exact variance per
    dimension of x_t at t = T and at t = `ORDER_T_END`."""
    sde = make_sde("vp")
    model = GaussianMixture([1.0], torch.zeros(1, WEAK_DIM), [WEAK_STD], sde).to(device)

    def variance(t: float) -> float:  # of x_t = s(t) (x_0 + sigma(t) n)
        return float(sde.scale(t)) ** 2 * (WEAK_STD ** 2 + float(sde.sigma(t)) ** 2)

    return model, variance(sde.T), variance(ORDER_T_END)


def _affine_second_moment(sampler: Any, params: Any, model: GaussianMixture,
                          grid: TimeGrid, v_start: float) -> float:
    """E|y|^2 of the output y = c + A x_T + sum_k B_k z_k, x_T ~ N(0, v_start I), read off
    the sampler: c from x_T = 0 and every draw 0, the columns of A and B_k from unit
    vectors in x_T and in draw k, one batch row each; then checked on random inputs."""
    device, dim = model.weights.device, WEAK_DIM
    counter = _UnitNoise((1, dim), None, device)
    _sample(sampler, params, model, torch.zeros(1, dim, dtype=torch.float64,
                                                device=device), grid, counter)
    draws, first = counter.draws, 1 + dim
    rows = first + draws * dim
    x = torch.zeros(rows, dim, dtype=torch.float64, device=device)
    x[1:first] = torch.eye(dim, dtype=torch.float64)
    units = _UnitNoise((rows, dim), first, device)
    out = _sample(sampler, params, model, x, grid, units)
    if units.draws != draws:
        raise _NotAffine("fewer noise draws than from x_T = 0")
    c = out[0]
    a = out[1:first] - c                                 # row j: A e_j
    b = (out[first:] - c).view(draws, dim, dim)          # b[k, j]: B_k e_j
    # A map that is not affine agrees with this one at the unit vectors only.
    x_t = math.sqrt(v_start) * torch.randn(4, dim, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(15))
    x_t = x_t.to(device)
    noise = _RecordedNoise(16, tuple(x_t.shape), device)
    got = _sample(sampler, params, model, x_t, grid, noise)
    if len(noise.drawn) != draws:
        raise _NotAffine("the number of noise draws depends on the input")
    predicted = c + x_t @ a + sum((z @ bk for z, bk in zip(noise.drawn, b)),
                                  torch.zeros_like(c))
    residual = float((got - predicted).abs().max() / (1 + got.abs().max()))
    if not residual <= AFFINE_RTOL:                      # NaN included
        raise _NotAffine(f"output {residual:.2g} away from the affine prediction")
    return float(c.pow(2).sum() + v_start * a.pow(2).sum() + b.pow(2).sum())


def exact_weak_errors(sampler: Any, params: Any, device: Any = "cpu"
                      ) -> Optional[list[float]]:
    """The error of E|x|^2 / D at `ORDER_T_END` relative to its exact value, per
    `WEAK_ORDER_STEPS`, computed, not sampled; None where the sampler is not affine in
    (x_T, z_1, ..., z_K) on this problem (its steps depend on norms of the state, say).

    The denoiser of a centred Gaussian is linear, so a sampler made of model evaluations
    and linear operations on the state and its noise draws is an affine map of them; its
    output is Gaussian and E|y|^2 = |E y|^2 + tr Cov y follows from the map alone."""
    model, v_start, v_end = _weak_problem(device)
    try:
        return [_affine_second_moment(sampler, params, model, uniform_grid(model.sde, n),
                                      v_start) / (WEAK_DIM * v_end) - 1
                for n in WEAK_ORDER_STEPS]
    except _NotAffine:
        return None


def monte_carlo_weak_errors(sampler: Any, params: Any, device: Any = "cpu"
                            ) -> list[tuple[float, float]]:
    """(error, standard error) of E|x|^2 / D at `ORDER_T_END`, relative to its exact
    value, per `WEAK_ORDER_STEPS`, from `WEAK_SAMPLES` samples."""
    model, v_start, v_end = _weak_problem(device)
    shape = (WEAK_SAMPLES, WEAK_DIM)
    x = math.sqrt(v_start) * torch.randn(shape, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(13))
    x = x.to(device)
    found = []
    for n in WEAK_ORDER_STEPS:
        out = _sample(sampler, params, model, x, uniform_grid(model.sde, n),
                      BatchNoise(14, shape, x.device))
        excess = (out.pow(2).sum(1) - (v_end / v_start) * x.pow(2).sum(1)) / (WEAK_DIM * v_end)
        found.append((float(excess.mean()), float(excess.std()) / math.sqrt(WEAK_SAMPLES)))
    return found
