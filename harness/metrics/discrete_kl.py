"""The exact density of a deterministic sampler's output, and its KL to the target.

A deterministic sampler with N steps is a map Phi_N from its initial noise x_T ~ N(0,
prior_std^2 I) to its output. Its output distribution q_N has, by the change of
variables through the *discrete* map (never through the continuous flow it
approximates),

    log q_N(Phi_N(x_T)) = log N(x_T; 0, prior_std^2 I) - log |det dPhi_N / dx_T|.

The full Jacobian is computed by forward-mode automatic differentiation through the
sampler: each sample is repeated D times with the D unit vectors as tangents, so one
run of the sampler gives dPhi_N/dx_T column by column (D times the work of sampling;
no trace estimator, no assumption on the steps). Hence the default limit D <= 256.

The change of variables needs Phi_N to be invertible. The sampler's callback shows the
state after every step; the determinant of the Jacobian so far is checked there and
at the end: if it is zero, or its sign differs between the evaluated points, some step
folds space and q_N has no density of this form (`NotInvertibleError`, "not invertible
at N = ..."). A sign that is the same at every point (a step that reflects space, as
Euler on a Gaussian with too long a step does) keeps the map invertible. This is a
check at the evaluated points, not a proof of global invertibility.

KL(q_N || p) = E_{x ~ q_N}[log q_N(x) - log p(x)] is estimated by the mean over the
evaluated points, with its standard error over points. Against the oracles' closed-form
log p_0 it is exact up to that Monte-Carlo error. For a trained model, p is the model's
own PF-ODE density (`harness.metrics.likelihood.ode_nll`), defined at t_min (the smallest
positive time every grid visits); the KL is then taken at t_min, between the sampler's
state there (read through its callback, before its final step to t = 0) and the
model's exact flow: this separates the sampler's discretisation error from the model's
error, and it tends to 0 as N grows. Both sides are normalised densities on R^D, so the
KL is >= 0 up to the stated Monte-Carlo error (and the reference solve's tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.autograd import forward_ad

from ..core.model import ScoreModel
from ..core.sampler import Params, Sampler
from ..core.schedules import TimeGrid
from ..errors import HarnessError, ParameterError

#: The largest dimension the metric accepts by default: D runs of the sampler per sample.
MAX_DIM = 256


class NotInvertibleError(HarnessError):
    """The sampler's discrete map folds space: its Jacobian determinant is zero or changes
    sign between evaluated points, so its output has no density by change of variables."""


@dataclass(frozen=True)
class DiscreteDensity:
    """log q_N at the sampler's states, by the change of variables through its map."""

    x: Tensor        # (B, *shape) the states where log q is given, on the CPU
    log_q: Tensor    # (B,) nats
    log_det: Tensor  # (B,) log |det d(state) / d x_T|
    t: float         # the time of the states (0 for the output)
    steps: int       # the sampler steps taken to reach them


def _no_noise(like: Optional[Tensor] = None) -> Tensor:
    raise TypeError("the sampler drew noise: its output is not a function of x_T alone, "
                    "so it has no density by change of variables")


def _orientation(tangent: Tensor, batch: int, dim: int, steps: int, step: int,
                 t: float) -> tuple[Tensor, Tensor]:
    """(sign, log|det|) of the Jacobians in `tangent` (batch*dim rows); raises
    NotInvertibleError when a determinant is zero or the signs differ."""
    jac = tangent.reshape(batch, dim, dim).transpose(1, 2).double()
    sign, log_abs = torch.linalg.slogdet(jac)
    zero = (sign == 0) | ~torch.isfinite(log_abs)
    where = f"after step {step + 1} of {steps} (t = {t:.6g})"
    if bool(zero.any()):
        raise NotInvertibleError(f"not invertible at N = {steps}: the Jacobian determinant "
                                 f"is zero {where} at {int(zero.sum())} of {batch} points")
    if bool((sign != sign[0]).any()):
        negative = int((sign < 0).sum())
        raise NotInvertibleError(f"not invertible at N = {steps}: the Jacobian determinant "
                                 f"changes sign {where} ({negative} of {batch} points "
                                 f"negative)")
    return sign, log_abs


def sampler_log_density(model: ScoreModel, sampler: Sampler, grid: TimeGrid, x_T: Tensor,
                        params: Optional[Params] = None, at_time: Optional[float] = None
                        ) -> DiscreteDensity:
    """log q_N of the sampler's states from initial states `x_T` (B, *shape).

    With `at_time` None: at the sampler's output (t = 0). With a time of the grid (e.g.
    `grid.t[-2]`, t_min): at the state the sampler reports through its callback at that
    time, i.e. the density of its state there. Runs in the dtype and on the device of
    `x_T`; the model must accept them. Its network evaluations are counted by the model
    as usual (D per sample per evaluation).
    """
    if sampler.capabilities.stochastic:
        raise ParameterError(f"sampler {sampler.name!r} is stochastic: its output is not a "
                             f"function of x_T, so it has no density by change of variables")
    params = sampler.make_params() if params is None else params
    batch, shape = x_T.shape[0], tuple(x_T.shape[1:])
    dim = math.prod(shape)
    steps = grid.steps
    eye = torch.eye(dim, dtype=x_T.dtype, device=x_T.device).reshape(dim, *shape)
    tangents = eye.repeat(batch, *([1] * len(shape)))          # row b*D + j: e_j
    repeated = x_T.repeat_interleave(dim, dim=0)
    captured: dict[str, Any] = {}

    def watch(info: dict) -> None:
        state = info.get("x")
        if not isinstance(state, Tensor):
            return
        primal, tangent = forward_ad.unpack_dual(state)
        if tangent is None:
            return
        step, t = int(info.get("i", -1)), float(info.get("t", math.nan))
        sign, log_abs = _orientation(tangent, batch, dim, steps, step, t)
        if at_time is not None and math.isclose(t, at_time, rel_tol=1e-12, abs_tol=0.0):
            captured.update(x=primal[::dim].detach().clone(), log_det=log_abs, step=step)

    with torch.no_grad(), forward_ad.dual_level():
        out = sampler(model, forward_ad.make_dual(repeated, tangents), grid, _no_noise,
                      watch, params)
        primal, tangent = forward_ad.unpack_dual(out)
        if tangent is None:
            raise ParameterError(f"sampler {sampler.name!r}: its output does not depend on "
                                 f"x_T differentiably (no forward-mode tangent came back)")
        _, log_det = _orientation(tangent, batch, dim, steps, steps - 1, grid.t[-1])
        x_out = primal[::dim].detach().clone()
    prior = model.sde.prior_log_prob(x_T.double())
    if at_time is None:
        return DiscreteDensity(x_out.cpu(), (prior - log_det).cpu(), log_det.cpu(),
                               float(grid.t[-1]), steps)
    if "x" not in captured:
        raise ParameterError(f"sampler {sampler.name!r} did not report its state at t = "
                             f"{at_time:g} through its callback (keys i, t, x after each "
                             f"step), which the density at that time needs")
    log_det = captured["log_det"]
    return DiscreteDensity(captured["x"].cpu(), (prior - log_det).cpu(), log_det.cpu(),
                           float(at_time), captured["step"] + 1)


@dataclass(frozen=True)
class DiscreteKL:
    """KL(q_N || p) by Monte Carlo over the sampler's own states; all values in nats."""

    nats: float           # the estimate: mean over points of log q_N - log p
    stderr: float         # its standard error over points (the Monte-Carlo error)
    dim: int
    num_points: int
    t: float              # where the densities are compared (0, or t_min)
    reference_stderr: float = 0.0  # Monte-Carlo error of log p itself (0 when exact)
    values: Tensor = field(repr=False, default=None)  # (B,) log q_N - log p per point

    @property
    def nats_per_dim(self) -> float:
        return self.nats / self.dim

    @property
    def bits_per_dim(self) -> float:
        return self.nats / (self.dim * math.log(2))

    @property
    def total_stderr(self) -> float:
        """The Monte-Carlo error of the points and of the reference density together."""
        return math.hypot(self.stderr, self.reference_stderr)


def discrete_kl(density: DiscreteDensity, log_p: Callable[[Tensor], Tensor],
                reference_stderr: float = 0.0) -> DiscreteKL:
    """KL(q_N || p) = mean of log q_N(x) - log p(x) over the states of `density`.

    `log_p(x) -> (B,)` is the target's log-density in nats at the same states (and the
    same time). `reference_stderr` is the Monte-Carlo error of the mean of log p, if it
    has one (a Hutchinson estimate), in nats.
    """
    log_p_values = log_p(density.x).detach().cpu().double().reshape(-1)
    values = density.log_q.double() - log_p_values
    n = values.shape[0]
    stderr = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    dim = math.prod(density.x.shape[1:])
    return DiscreteKL(float(values.mean()), stderr, dim, n, density.t,
                      float(reference_stderr), values)
