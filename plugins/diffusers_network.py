"""The harness's denoiser as the network a diffusers scheduler's loop calls.

A scheduler's loop hands its network a sample at a timestep and expects, per its
`prediction_type`, a noise, data or velocity prediction. Every scheduler in diffusers
follows one of three conventions (`Convention`) for what the sample is; with u the
harness's unscaled variable (x = s(t) u = s(t) (x_0 + sigma n)) and sigma the noise
level of the call:

* alpha-scaled (`ALPHA_TABLE`, `ALPHA_SIGMAS`): DDPM's sample sqrt(abar) x_0 +
  sqrt(1 - abar) n with abar = 1 / (1 + sigma^2), i.e. sample = u / sqrt(1 + sigma^2),
  and the network sees it as it is (DDIM, DDPM, PNDM, LCM, TCD, DPM-Solver, UniPC, DEIS,
  SA-Solver);
* unscaled (`UNSCALED`): sample = u; `scale_model_input` divides it by
  sqrt(1 + sigma^2) before the network, which is then the DDPM network above (Euler,
  Heun, LMS, the KDPM2s, DPMSolverSDE);
* EDM-preconditioned (`PRECONDITIONED`): sample = u, the network sees c_in u and its
  output F is read as D = c_skip u + c_out F (EDMEuler, EDM and cosine DPM-Solver).

The network's input is thus a function of the sample and sigma alone: the harness's
model is given u itself (the exact inverse of the scaling), and `scale_model_input` is
still called, as a pipeline calls it, for the state it keeps (step index, stage).

The prediction handed back is computed from D = model.denoise(u, sigma) exactly, in the
state's dtype: noise eps = (u - D) / sigma, data D, velocity v = sqrt(abar) eps -
sqrt(1 - abar) D = (eps - sigma D) / sqrt(1 + sigma^2) (Salimans and Ho 2022, in u; the
same expression the unscaled schedulers invert), and under preconditioning F = (D -
c_skip u) / c_out with the scheduler's own c_skip and c_out, read off its
`precondition_outputs` at the call's sigma. So the scheduler's own reconstruction of the
clean sample is D, up to rounding. (LCM and TCD then apply their consistency boundary
condition, D c_out + x_t c_skip with c_skip ~ 4e-8 at their timesteps: left as is.)

The noise level of a call is the one the scheduler's update assumes for it, read as the
scheduler reads it (in float32, as diffusers stores it): alpha_bar[timestep] for the
schedulers that step with the table (`sigma_from_table`), else its `sigmas` entry at the
step index (`sigma_at_step`), or for the two-stage schedulers the level of the stage
(`sigma_of_stage`). The model is evaluated at exactly that level, so model and update
agree whatever spacing, interpolation or float32 rounding the scheduler applied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Scheduler = Any
#: The noise level a call is evaluated at: a float, or the scheduler's own 0-d tensor.
Level = Any


def sigma_from_table(scheduler: Scheduler, timestep: Tensor) -> float:
    """sqrt((1 - abar) / abar) at abar = alphas_cumprod[timestep]: what DDIM, DDPM,
    PNDM, LCM and TCD step with."""
    abar = float(scheduler.alphas_cumprod[int(timestep)])
    return math.sqrt((1 - abar) / abar)


def sigma_at_step(scheduler: Scheduler, timestep: Tensor) -> Level:
    """`sigmas[step_index]`; where the scheduler sets its step index in `step` only (the
    DPM-Solver family), the index `step` is about to take."""
    index = scheduler.step_index
    if index is None:
        index = scheduler.index_for_timestep(timestep)
    return scheduler.sigmas[index]


def sigma_of_stage(second: Callable[[Scheduler], Level]
                   ) -> Callable[[Scheduler, Tensor], Level]:
    """A two-stage scheduler's level: `sigmas[step_index]` in its first stage,
    `second(scheduler)` in its second, as its `scale_model_input` reads them."""
    def sigma(scheduler: Scheduler, timestep: Tensor) -> Level:
        if scheduler.state_in_first_order:
            return scheduler.sigmas[scheduler.step_index]
        return second(scheduler)
    return sigma


def every_call(scheduler: Scheduler) -> bool:
    return True


def back_in_first_stage(scheduler: Scheduler) -> bool:
    """A two-stage step (Heun, KDPM2, DPMSolverSDE) ends when its second stage has run."""
    return scheduler.state_in_first_order


def pndm_step_ended(scheduler: Scheduler) -> bool:
    """PNDM's Runge-Kutta warm-up evaluates four times per step; its first PLMS step
    without warm-up (`skip_prk_steps`) twice; every other step once."""
    calls = scheduler.counter
    if scheduler.config.skip_prk_steps:
        return calls != 1
    return calls > len(scheduler.prk_timesteps) or calls % 4 == 0


@dataclass(frozen=True)
class Convention:
    """How one scheduler class talks to its network (see the module docstring)."""

    #: The sample is u / sqrt(1 + sigma^2) (alpha-scaled), else u.
    alpha_scaled: bool
    #: The output is EDM-preconditioned (F, read as D = c_skip u + c_out F).
    preconditioned: bool
    #: The noise level of the call at `timestep`, after `scale_model_input`.
    sigma: Callable[[Scheduler, Tensor], Level]
    #: Whether the `step` just taken ended one of the scheduler's steps.
    step_ended: Callable[[Scheduler], bool] = every_call

    def unscaled(self, sample: Tensor, sigma: float) -> Tensor:
        """The harness's u of the scheduler's sample at noise level sigma."""
        return sample * math.sqrt(1 + sigma * sigma) if self.alpha_scaled else sample

    def prediction(self, scheduler: Scheduler, u: Tensor, denoised: Tensor,
                   level: Level) -> Tensor:
        """What the scheduler's network would return, given D(u; sigma)."""
        if self.preconditioned:
            one = torch.ones((), dtype=u.dtype, device=u.device)
            c_skip = scheduler.precondition_outputs(one, torch.zeros_like(one), level)
            c_out = scheduler.precondition_outputs(torch.zeros_like(one), one, level)
            return (denoised - c_skip * u) / c_out
        kind = scheduler.config.prediction_type
        if kind == "sample":
            return denoised
        sigma = float(level)
        eps = (u - denoised) / sigma
        if kind == "epsilon":
            return eps
        if kind == "v_prediction":
            return (eps - sigma * denoised) / math.sqrt(1 + sigma * sigma)
        raise ValueError(f"prediction_type {kind!r}: the adapter feeds epsilon, sample or "
                         f"v_prediction")


ALPHA_TABLE = Convention(alpha_scaled=True, preconditioned=False, sigma=sigma_from_table)
ALPHA_SIGMAS = Convention(alpha_scaled=True, preconditioned=False, sigma=sigma_at_step)
UNSCALED = Convention(alpha_scaled=False, preconditioned=False, sigma=sigma_at_step)
PRECONDITIONED = Convention(alpha_scaled=False, preconditioned=True, sigma=sigma_at_step)


def two_stage(second: Callable[[Scheduler], Level]) -> Convention:
    """An unscaled two-stage scheduler whose second stage sits at `second(scheduler)`."""
    return Convention(alpha_scaled=False, preconditioned=False,
                      sigma=sigma_of_stage(second), step_ended=back_in_first_stage)


#: Each adapted class's convention. The second stages read: Heun `sigmas[step_index]`
#: (its sigmas repeat each level), KDPM2 `sigmas_interpol[step_index]`, KDPM2Ancestral
#: `sigmas_interpol[step_index - 1]` (diffusers indexes the two differently),
#: DPMSolverSDE its `mid_point_sigma`.
CONVENTIONS: dict[str, Convention] = {
    **dict.fromkeys(("DDIMScheduler", "DDIMParallelScheduler", "CogVideoXDDIMScheduler",
                     "DDPMScheduler", "DDPMParallelScheduler", "LCMScheduler",
                     "TCDScheduler"), ALPHA_TABLE),
    "PNDMScheduler": Convention(alpha_scaled=True, preconditioned=False,
                                sigma=sigma_from_table, step_ended=pndm_step_ended),
    **dict.fromkeys(("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
                     "UniPCMultistepScheduler", "DEISMultistepScheduler",
                     "SASolverScheduler"), ALPHA_SIGMAS),
    **dict.fromkeys(("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                     "LMSDiscreteScheduler"), UNSCALED),
    "HeunDiscreteScheduler": two_stage(lambda s: s.sigmas[s.step_index]),
    "KDPM2DiscreteScheduler": two_stage(lambda s: s.sigmas_interpol[s.step_index]),
    "KDPM2AncestralDiscreteScheduler": two_stage(
        lambda s: s.sigmas_interpol[s.step_index - 1]),
    "DPMSolverSDEScheduler": two_stage(lambda s: s.mid_point_sigma),
    **dict.fromkeys(("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
                     "CosineDPMSolverMultistepScheduler"), PRECONDITIONED),
}
