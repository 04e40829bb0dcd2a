"""A deterministic sampler's ODE discretisation error, against a tight adaptive solve.

A deterministic sampler integrates the probability-flow ODE from its initial noise x_T
to t = 0 with a fixed budget of network evaluations. Its discretisation error is the
distance between its output and the exact solution from the *same* x_T, here a tight
adaptive solve (torchdiffeq dopri5, rtol = atol = 1e-7, float64 by default; Dormand &
Prince 1980). This is the error curve sampler papers plot against NFE (e.g. Lu et al.
2022, DPM-Solver, Fig. 3), and it is defined at any dimension.

    ode_error = sqrt( mean over samples i and dimensions d of (x_i,d - x*_i,d)^2 )

(the RMS distance per dimension, in the data's units). Sample i's x_T is drawn as the
sampling loop draws it (`harness.core.sampling.generate`: the first draw of sample i's
`SampleNoise` stream, times the prior's standard deviation), so the reference belongs
to exactly the trajectory the trial sampled; the reference depends only on
(model, seed, index) and is reused by every sampler and step budget.

Where the integration ends. Every grid ends with a step from t_min to t = 0. When the
model's drift is finite at t = 0 (the Gaussian-mixture oracles under every process),
the reference is the exact solution at t = 0. A network's drift is 0/0 there (sigma(0)
= 0 divides its score, and an EDM network's log-sigma conditioning is -inf); then the
reference is exact down to t_min, followed by one Euler step to t = 0, which is the
final step of the built-in samplers (for the EDM process it is the denoiser
D(x; sigma_min)). `ReferenceSolution.end` says which, and the metric logs it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..core.counting import CountedModel
from ..core.model import ScoreModel
from ..core.noise import SampleNoise
from ..errors import ParameterError

#: The reference's defaults: tight enough that its own error is far below any sampler's.
REFERENCE_SOLVER = "dopri5"
REFERENCE_TOLERANCE = 1e-7
END_EXACT = "t = 0 (adaptive solve to the end)"
END_EULER = "t_min (adaptive solve), then one Euler step to t = 0 (drift not finite at 0)"


def initial_state(model: ScoreModel, seed: int, indices: Sequence[int],
                  dtype: Optional[torch.dtype] = None) -> Tensor:
    """x_T of samples `indices` of a run with base `seed`, exactly as `generate` draws it:
    prior_std times the first draw of each sample's stream, in `dtype` (default the
    model's), on the model's device."""
    dtype = dtype or model.dtype
    noise = SampleNoise(seed, indices, model.data.shape, device=model.device, dtype=dtype)
    return model.sde.prior_std * noise()


def float64_model(model: ScoreModel) -> ScoreModel:
    """The model with float64 parameters and buffers: the model itself if it has them,
    else a copy (so that the model the trials sample on is left as it was)."""
    if model.dtype == torch.float64:
        return model
    try:
        twin = copy.deepcopy(model)
    except Exception as err:  # e.g. a compiled network that cannot be copied
        raise ParameterError(f"cannot make a float64 copy of the model for the reference "
                             f"solve ({type(err).__name__}: {err}); set dtype = 'model'"
                             ) from err
    return twin.to(torch.float64)


@dataclass(frozen=True)
class ReferenceSolution:
    """The PF-ODE solution at t = 0 from each x_T, and how it was computed."""

    x: Tensor          # (B, *data.shape), on the CPU, in the solve's dtype
    nfe: float         # network evaluations per sample the solver used
    end: str           # END_EXACT or END_EULER
    solver: str
    rtol: float
    atol: float


def reference_solve(model: ScoreModel, x_T: Tensor, *, rtol: float = REFERENCE_TOLERANCE,
                    atol: float = REFERENCE_TOLERANCE, solver: str = REFERENCE_SOLVER,
                    dtype: torch.dtype = torch.float64) -> ReferenceSolution:
    """Solve the PF-ODE dx/dt = model.ode_drift(x, t) from x_T at t = T down to t = 0.

    Adaptive (`torchdiffeq.odeint`, `solver`, `rtol`, `atol`) from T to t_min, then to
    t = 0 by the same solver when the drift is finite there, else by one Euler step (see
    the module docstring). The state is in `dtype`; the model must accept it (use
    `float64_model`). The solver controls its steps on the whole batch, so a sample's
    reference depends on its batch-mates at the level of the tolerance, never more.
    """
    if not (0 < rtol < 1 and 0 < atol < 1):
        raise ParameterError(f"rtol and atol must lie in (0, 1), got {rtol!r}, {atol!r}")
    from torchdiffeq import odeint

    sde = model.sde
    x = x_T.to(device=model.device, dtype=dtype)
    counted = CountedModel(model)  # the solver's evaluations: the reported NFE

    def drift(t: Tensor, state: Tensor) -> Tensor:
        return counted.ode_drift(state, t)

    def solve(x0: Tensor, t0: float, t1: float) -> Tensor:
        times = torch.tensor([t0, t1], dtype=dtype, device=x0.device)
        # torchdiffeq's own first-step guess and its steps may overshoot t1 and evaluate
        # the drift beyond it (negative t: sigma is NaN for VP); land on t1 instead.
        options = {"step_t": times[1:], "first_step": 1e-4 * abs(t1 - t0)}
        return odeint(drift, x0, times, rtol=rtol, atol=atol, method=solver,
                      options=options)[-1]

    with torch.no_grad():
        x = solve(x, sde.T, sde.t_min)
        at_zero = counted.ode_drift(x, torch.zeros((), dtype=dtype, device=x.device))
        if bool(torch.isfinite(at_zero).all()):
            x, end = solve(x, sde.t_min, 0.0), END_EXACT
        else:
            x = x + (0.0 - sde.t_min) * counted.ode_drift(x, sde.t_min)
            end = END_EULER
    nfe = counted.nfe.rows / x.shape[0]
    return ReferenceSolution(x.cpu(), nfe, end, solver, rtol, atol)


@dataclass(frozen=True)
class ODEError:
    """RMS distance per dimension between samples and their references."""

    rms: float            # sqrt(mean over samples and dimensions of the squared error)
    stderr: float         # delta-method standard error of `rms` over samples
    max_sample_rms: float  # the worst sample's own RMS per dimension
    num_samples: int
    per_sample_ms: Tensor  # (B,) mean squared error per dimension of each sample


def ode_error(samples: Tensor, reference: Tensor) -> ODEError:
    """The RMS per dimension of `samples - reference` (both (B, *shape)), in float64.

    The standard error treats the per-sample mean squares m_i as i.i.d.: se(mean m) =
    std(m) / sqrt(B), and se(sqrt(mean m)) = se(mean m) / (2 sqrt(mean m)).
    """
    if samples.shape != reference.shape:
        raise ParameterError(f"samples {tuple(samples.shape)} and references "
                             f"{tuple(reference.shape)} differ in shape")
    diff = samples.detach().cpu().double() - reference.detach().cpu().double()
    ms = diff.flatten(1).pow(2).mean(1)
    n = ms.shape[0]
    mean = float(ms.mean())
    rms = math.sqrt(mean)
    se_mean = float(ms.std() / math.sqrt(n)) if n > 1 else math.nan
    stderr = se_mean / (2 * rms) if rms > 0 else 0.0
    return ODEError(rms, stderr, float(ms.max().sqrt()), n, ms)
