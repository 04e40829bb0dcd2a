"""diffusers' schedulers, each registered as `diffusers:<SchedulerClass>` and run as it is.

When diffusers is installed, every scheduler class it exports that can run on a harness
model becomes a sampler, with zero code per class: its own `set_timesteps`,
`scale_model_input` and `step` loop and its own timestep spacing, around the harness's
denoiser and noise. When it is not installed this plugin registers nothing, silently.

* The loop, and what it keeps of the harness's grid (its step count only):
  `harness_plugins.diffusers_loop`.
* The model as the scheduler's network (alpha-scaled, unscaled or EDM-preconditioned
  samples; epsilon, sample or v predictions; the noise level of each call):
  `harness_plugins.diffusers_network`.
* The training table, the model's process exactly: `harness_plugins.diffusers_tables`.
* Params (the config and `step` arguments, with what the harness sets and why), the
  `noise` and `training_table` markers, and the noise switches that register a class
  twice (`diffusers:DDIMScheduler` and `diffusers:DDIMScheduler_eta`):
  `harness_plugins.diffusers_params`.

Capabilities are derived, not declared: `stochastic` from the registration (see
diffusers_params); the NFE of a run from the scheduler itself, one network call per
entry of its timesteps (2N - 1 for Heun, the KDPM2s and DPMSolverSDE, N + 9 for PNDM's
Runge-Kutta warm-up), whatever the grid's end; and `order` = 0, what the conformance
kit measures: its order problems stop the grid at t = 0.05, which these samplers do not
follow, so their error there is a fixed offset, not a discretisation error (the
schemes' own orders are the library's: DDIM 1, DPM-Solver++(2M) 2, ...).

Classes that cannot run on a harness model are not registered; `NOT_ADAPTED` (class ->
why), filled at registration, says why for each, and a class new to this adapter is
listed there as such rather than guessed at.
"""

from __future__ import annotations

import importlib.util
import typing
from collections.abc import Callable
from typing import Any, Literal

from harness import Capabilities, Sampler, hookimpl
from harness.core.sampler import LISTED_STEPS

from .diffusers_loop import SchedulerSampler
from .diffusers_network import CONVENTIONS, back_in_first_stage
from .diffusers_params import SWITCHES, arguments, params_class, way_in

harness_api_version = 1

#: The library these samplers run: its version is part of every trial's configuration
#: hash (`harness.bench.configuration.code_identity`), so that an upgrade reruns their trials.
DISTRIBUTION = "diffusers"

#: The order the conformance kit measures for every adapter (see the module docstring).
ORDER = 0

DISCRETE = "discrete (token) diffusion: its samples are class indices, not vectors"
FLOW = "a flow-matching (rectified flow) process, not a diffusion the harness models"
INVERSE = "an inversion scheduler (data to noise), not a sampler"
#: Why the classes diffusers exports that this adapter knows are not registered.
WHY_NOT = {
    "AmusedScheduler": DISCRETE, "BlockRefinementScheduler": DISCRETE,
    "DiscreteDDIMScheduler": DISCRETE, "EntropyBoundScheduler": DISCRETE,
    "VQDiffusionScheduler": DISCRETE,
    "FlowMatchEulerDiscreteScheduler": FLOW, "FlowMatchHeunDiscreteScheduler": FLOW,
    "FlowMatchLCMScheduler": FLOW, "FlowMapEulerDiscreteScheduler": FLOW,
    "LTXEulerAncestralRFScheduler": FLOW, "MiniMaxH3Scheduler": FLOW,
    "PiflowScheduler": FLOW, "HeliosScheduler": FLOW, "HeliosDMDScheduler": FLOW,
    "RFD4ProteinaScheduler": "protein-structure flow: step() needs an emission mask",
    "SCMScheduler": "TrigFlow consistency sampling (sCM): its network predicts a "
                    "TrigFlow velocity, not a diffusion model's output",
    "DDIMInverseScheduler": INVERSE, "DPMSolverMultistepInverseScheduler": INVERSE,
    "ScoreSdeVeScheduler": "a predictor-corrector API (step_pred, step_correct), no "
                           "step() loop",
    "RePaintScheduler": "inpainting: step() needs the original image and its mask",
    "UnCLIPScheduler": "a fixed squaredcos_cap_v2 table it cannot be given (no "
                       "trained_betas): cannot describe the model's process",
    "DDPMWuerstchenScheduler": "its own continuous cosine process, no table: cannot "
                               "describe the model's process",
    "CogVideoXDPMScheduler": "step() needs the previous data prediction and a second "
                             "timestep: not the one-call-per-timestep loop",
    "IPNDMScheduler": "its path starts at alpha = 0 (infinite sigma, where no model is "
                      "defined) and its only table, trained_betas, is a per-step list "
                      "of N + 1 levels, not a training table",
    "CMStochasticIterativeScheduler": "consistency-model boundary condition: c_out = 0 "
                                      "at sigma_min, where its last call sits, so no "
                                      "denoiser can be given as its network output",
}

#: Each adapted class's source (diffusers implements the paper's algorithm).
CITATIONS = {
    "DDIMScheduler": "Song, Meng and Ermon 2021, Denoising Diffusion Implicit Models",
    "DDIMParallelScheduler": "Song, Meng and Ermon 2021 (DDIM), the ParaDiGMS variant "
                             "(Shih et al. 2023)",
    "CogVideoXDDIMScheduler": "Song, Meng and Ermon 2021 (DDIM), CogVideoX's (Yang et "
                              "al. 2024), SNR shift off",
    "DDPMScheduler": "Ho, Jain and Abbeel 2020, Denoising Diffusion Probabilistic Models",
    "DDPMParallelScheduler": "Ho, Jain and Abbeel 2020 (DDPM), the ParaDiGMS variant "
                             "(Shih et al. 2023)",
    "PNDMScheduler": "Liu et al. 2022, Pseudo Numerical Methods for Diffusion Models",
    "LCMScheduler": "Luo et al. 2023, Latent Consistency Models (multistep sampling)",
    "TCDScheduler": "Zheng et al. 2024, Trajectory Consistency Distillation",
    "DPMSolverMultistepScheduler": "Lu et al. 2022, DPM-Solver and DPM-Solver++ "
                                   "(multistep)",
    "DPMSolverSinglestepScheduler": "Lu et al. 2022, DPM-Solver and DPM-Solver++ "
                                    "(singlestep)",
    "UniPCMultistepScheduler": "Zhao et al. 2023, UniPC",
    "DEISMultistepScheduler": "Zhang and Chen 2023, Diffusion Exponential Integrator "
                              "Sampler",
    "SASolverScheduler": "Xue et al. 2023, SA-Solver",
    "EulerDiscreteScheduler": "Karras et al. 2022, Algorithm 2 (Euler, churn)",
    "EulerAncestralDiscreteScheduler": "Crowson's k-diffusion, Euler ancestral",
    "LMSDiscreteScheduler": "Crowson's k-diffusion, linear multistep",
    "HeunDiscreteScheduler": "Karras et al. 2022, Algorithm 1 (Heun)",
    "KDPM2DiscreteScheduler": "Crowson's k-diffusion, DPM-Solver-2 (Karras et al. 2022)",
    "KDPM2AncestralDiscreteScheduler": "Crowson's k-diffusion, DPM-Solver-2 ancestral",
    "DPMSolverSDEScheduler": "Crowson's k-diffusion, DPM-Solver++ SDE (Lu et al. 2022)",
    "EDMEulerScheduler": "Karras et al. 2022, Elucidating the Design Space (Euler)",
    "EDMDPMSolverMultistepScheduler": "Lu et al. 2022 (DPM-Solver++) on the EDM "
                                      "preconditioning (Karras et al. 2022)",
    "CosineDPMSolverMultistepScheduler": "Lu et al. 2022 (DPM-Solver++), Stable Audio's "
                                         "cosine schedule (Evans et al. 2024)",
}

#: The classes diffusers exports that are not registered: name -> why (filled at
#: registration, for listings and unknown-name errors).
NOT_ADAPTED: dict[str, str] = {}


@hookimpl
def harness_register_samplers(register: Callable[[Sampler], None]) -> None:
    if importlib.util.find_spec("diffusers") is None:
        return
    import diffusers

    NOT_ADAPTED.clear()
    for name in sorted(n for n in dir(diffusers) if n.endswith("Scheduler")):
        for sampler in adapted(name, getattr(diffusers, name), diffusers.__version__):
            register(sampler)


def adapted(name: str, scheduler_class: Any, version: str) -> list[Sampler]:
    """The samplers of one exported class: none (then it is in `NOT_ADAPTED`), one, or,
    for a class with a noise switch off by default (`SWITCHES`), two."""
    why = WHY_NOT.get(name) or _unknown(name, scheduler_class, version)
    if why:
        NOT_ADAPTED[name] = why
        return []
    switch = _switch(scheduler_class)
    if switch is None:
        return [_sampler(name, scheduler_class, version)]
    return [_sampler(name, scheduler_class, version, switch, on) for on in (False, True)]


def _switch(scheduler_class: type) -> str | None:
    """The class's `SWITCHES` argument that draws no noise at its default but can: a
    number above 0, or a string among its annotated choices (SA-Solver's and DEIS's
    algorithm_type, with no SDE choice, are no switch)."""
    init, step = arguments(scheduler_class)
    for argument in init + step:
        rule = SWITCHES.get(argument.name)
        if rule is None or rule.draws(argument.default):
            continue
        if not isinstance(rule.on, str):
            return argument.name
        if typing.get_origin(argument.annotation) is Literal and any(
                rule.draws(choice) for choice in typing.get_args(argument.annotation)):
            return argument.name
    return None


def _unknown(name: str, scheduler_class: Any, version: str) -> str:
    """Why a class outside `WHY_NOT` cannot be registered; "" when it can."""
    if type(scheduler_class).__name__ == "DummyObject":
        return (f"a placeholder in diffusers {version}: no working class is installed "
                f"(backends: {', '.join(getattr(scheduler_class, '_backends', []))})")
    if name not in CONVENTIONS:
        return (f"new in diffusers {version}: its convention (sample variable, noise "
                f"level of a call) is not known to this adapter yet")
    init, step = ({p.name for p in found} for found in arguments(scheduler_class))
    needs = {"model_output", "timestep", "sample"} - step
    needs |= ({"sigma_min", "sigma_max"} if CONVENTIONS[name].preconditioned
              else {"trained_betas", "num_train_timesteps"}) - init
    if needs:
        return (f"its diffusers {version} signature lacks {', '.join(sorted(needs))}, "
                f"which this adapter relies on")
    return ""


def _sampler(name: str, scheduler_class: type, version: str, switch: str | None = None,
             on: bool = False) -> Sampler:
    """`diffusers:<name>`, or `diffusers:<name>_<suffix>` with its switch on."""
    convention = CONVENTIONS[name]
    init, step = arguments(scheduler_class)
    way, marker = way_in(scheduler_class) if switch is None or on else ("", "none")
    registered = f"{name}_{SWITCHES[switch].suffix}" if on else name
    params = params_class(registered, scheduler_class, marker, switch, on,
                          table=not convention.preconditioned)
    fields = set(params.__dataclass_fields__)
    with_switch = f" with {switch} = {SWITCHES[switch].on!r}" if on else ""
    summary = (f"diffusers' {name}{with_switch} run as it is, on its own timesteps (the "
               f"grid gives their number); noise: {marker}.")
    fn = SchedulerSampler(
        f"diffusers:{registered}", scheduler_class, convention,
        init_args=tuple(p.name for p in init if p.name in fields),
        step_args=tuple(p.name for p in step if p.name in fields), noise=way,
        summary=summary)
    two_stage = convention.step_ended is back_in_first_stage
    return Sampler(name=f"diffusers:{registered}", fn=fn, params=params,
                   capabilities=_capabilities(fn, bool(way), two_stage),
                   citation=f"{CITATIONS[name]}; diffusers {version} {name}")


def _capabilities(fn: SchedulerSampler, stochastic: bool, two_stage: bool
                  ) -> Capabilities:
    """NFE from the scheduler's own timesteps: `nfe_per_step` the cost of one more step;
    for the two-stage schedulers, which end on an Euler step, the cost of the last one;
    and the remainder per run (PNDM's warm-up; under VE, where the harness expects no
    cheaper last step, the one saved)."""
    def per_step(p: Any) -> int:
        return fn.calls(p, LISTED_STEPS + 1) - fn.calls(p, LISTED_STEPS)

    def last(p: Any) -> int:
        return fn.calls(p, LISTED_STEPS) - per_step(p) * (LISTED_STEPS - 1)

    def extra(p: Any, steps: int, final_sigma_zero: bool) -> int:
        expected = ((steps - 1) * per_step(p) + last(p) if two_stage and final_sigma_zero
                    else steps * per_step(p))
        return fn.calls(p, steps) - expected

    return Capabilities(stochastic=stochastic, order=ORDER, nfe_per_step=per_step,
                        final_step_nfe=last if two_stage else None, extra_nfe=extra)
