"""A diffusers scheduler's settings as a harness sampler's hyperparameters.

A registration's `Params` (through `harness.core.foreign_params`) are its scheduler's
constructor arguments (its config) and the keyword arguments of its `step` that a
pipeline passes (DDIM's `eta`, Euler's `s_churn`, ...), with diffusers' defaults and
one-line docs read from diffusers' own docstrings. The harness sets some itself and
refuses them with the reason (`TAKEN`): the training table, which must be the model's
process (`harness_plugins.diffusers_tables`); the loop's own arguments; the noise; and
the options that would make the scheduler serve another process than the model's
(flow-matching sigmas, zero terminal SNR, ...). Values no harness model can serve are
refused with the reason when the params are built (`REFUSED`).

Two markers are added, each allowed a single value, so that every trial's logged params
say what the adapter chose: `training_table` (the table's rule) and `noise` (where the
scheduler's noise comes from, `NOISE`).

Stochastic or not: capabilities are data about a registration's defaults and must stay
true for every value a suite may set, since the ODE-error and exact-KL metrics trust
`stochastic = False`. So a scheduler that draws no noise at its defaults but has a
setting that makes it draw (`SWITCHES`: DDIM's eta, Euler's s_churn, DPM-Solver's SDE
algorithms) is registered twice, as the harness's own ddim and ddim_eta are:
`diffusers:DDIMScheduler`, which cannot draw, and `diffusers:DDIMScheduler_eta`,
stochastic, the setting on by default. A scheduler that draws at its defaults is
stochastic also when a suite turns its noise off (TCD with eta = 0): the kit allows
that direction.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from harness import ParameterError, Params
from harness.core.foreign_params import foreign_params

from .diffusers_tables import SIGMA_FLOOR, TABLE_LEVELS

TABLE = "the training table is the model's process (see training_table)"
FLOW = "flow-matching sigmas are another process (rectified flow) than the model's"
SHIFT = "time shifting needs a resolution-dependent mu, which no harness model gives"
NOISE_TAKEN = "each sample's own harness noise stream (see noise)"
LOOP = "the adapter's loop passes it"

#: The arguments the harness sets itself, and why a suite cannot set them: for every
#: scheduler, ...
TAKEN: dict[str, str] = {
    "use_flow_sigmas": FLOW, "flow_shift": FLOW,
    "use_dynamic_shifting": SHIFT, "time_shift_type": SHIFT,
    "model_output": LOOP, "timestep": LOOP, "sample": LOOP, "return_dict": LOOP,
    "generator": NOISE_TAKEN, "variance_noise": NOISE_TAKEN,
    "noise_sampler_seed": NOISE_TAKEN,
}
#: ... for those built from a training table, ...
TABLE_TAKEN = {
    "num_train_timesteps": "the training table's length: the model's own, or "
                           f"{TABLE_LEVELS} levels (see training_table)",
    "beta_start": TABLE, "beta_end": TABLE, "beta_schedule": TABLE,
    "trained_betas": "computed from the model's process (see training_table)",
    "rescale_betas_zero_snr": "rescales the training table to zero terminal SNR, a "
                              "level of infinite sigma no harness model has",
    "snr_shift_scale": "shifts the training table's SNR (CogVideoX): the table must be "
                       "the model's, so it is set to 1",
}
#: ... and for the EDM-preconditioned ones, built from a sigma range.
RANGE_TAKEN = {"sigma_min": "the model's sigma(t_min)", "sigma_max": "the model's sigma(T)"}
#: The values the harness sets for taken arguments whose library default would not do.
FIXED = {"snr_shift_scale": 1.0}

#: Arguments a class's step() takes but never reads: taken, and no noise comes in
#: through them (CogVideoX's DDIM is DDIM's deterministic update whatever eta is).
IGNORED: dict[str, tuple[str, ...]] = {
    "CogVideoXDDIMScheduler": ("eta", "use_clipped_model_output", "generator",
                               "variance_noise"),
}

FLOW_OUTPUT = ("a flow-matching model's output; the harness feeds its denoiser as "
               "epsilon, sample or v_prediction")
LEARNED = "needs a network that predicts its own variance; harness models predict the mean"
#: Settings no harness model can serve: argument -> (refuses the value?, why).
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "prediction_type": (lambda v: v == "flow_prediction", FLOW_OUTPUT),
    "variance_type": (lambda v: v in ("learned", "learned_range"), LEARNED),
}


@dataclass(frozen=True)
class Switch:
    """A setting that turns noise on where the library leaves it off."""

    #: Its default in the stochastic registration.
    on: Any
    #: That registration's name: `diffusers:<Class>_<suffix>`.
    suffix: str
    #: Whether a value draws noise.
    draws: Callable[[Any], bool]
    #: The deterministic registration leaves it, and `companions` (which act only with
    #: it), at the library's value; else it stays settable and its noisy values are
    #: refused (DPM-Solver's algorithm_type also chooses among deterministic solvers).
    pinned: bool = True
    companions: tuple[str, ...] = ()


SWITCHES: dict[str, Switch] = {
    "eta": Switch(1.0, "eta", lambda v: v > 0),
    "s_churn": Switch(10.0, "churn", lambda v: v > 0, companions=("s_tmin", "s_tmax",
                                                                   "s_noise")),
    "algorithm_type": Switch("sde-dpmsolver++", "sde", lambda v: v.startswith("sde"),
                             pinned=False),
}

#: Where a registration's noise comes from: the `noise` marker's values.
NOISE = {
    "none": "draws no noise",
    "per-sample": "each sample's own harness stream, handed to step() as variance_noise",
    "per-sample-seeded": "per-sample torch generators or Brownian trees (DPMSolverSDE, "
                         "CosineDPMSolverMultistep), seeded from each sample's harness "
                         "stream: independent of the batch, but not the harness's draws",
}
#: How noise gets into a scheduler, by the first of these arguments it takes, and the
#: `noise` value that says so (`harness_plugins.diffusers_loop` hands it in).
WAYS_IN = (("variance_noise", "per-sample"), ("generator", "per-sample-seeded"),
           ("noise_sampler_seed", "per-sample-seeded"))
TABLE_MARK = f"model-or-log-sigma-{TABLE_LEVELS}"
TABLE_DOC = (f"the training table (alphas_cumprod) the scheduler is built with: a "
             f"diffusers DDPM model's own; for a continuous process {TABLE_LEVELS} levels "
             f"log-uniform in sigma over [max(sigma(t_min), {SIGMA_FLOOR}), sigma(T)]")


class Refusals:
    """Refuses the values of `refused` (argument -> (test, why)) when params are built."""

    refused: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}

    def check(self) -> None:
        for name, (refuses, why) in self.refused.items():
            value = getattr(self, name)
            if refuses(value):
                raise ParameterError(f"parameter {name!r} = {value!r} is refused: {why}")


def arguments(scheduler_class: type) -> tuple[list[inspect.Parameter],
                                              list[inspect.Parameter]]:
    """The constructor's and `step`'s named arguments (self, *args, **kwargs left out),
    less those its step() never reads (`IGNORED`)."""
    ignored = IGNORED.get(scheduler_class.__name__, ())

    def named(function: Callable) -> list[inspect.Parameter]:
        return [p for p in inspect.signature(function).parameters.values()
                if p.name != "self" and p.name not in ignored
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named(scheduler_class.__init__), named(scheduler_class.step)


def way_in(scheduler_class: type) -> tuple[str, str]:
    """The argument noise comes in through, and its `noise` value ("", "none": none)."""
    init, step = arguments(scheduler_class)
    names = {p.name for p in init + step}
    return next(((a, value) for a, value in WAYS_IN if a in names), ("", "none"))


def params_class(name: str, scheduler_class: type, noise: str, switch: str | None = None,
                 on: bool = False, table: bool = True) -> type[Params]:
    """The `Params` of the registration `name` of `scheduler_class`.

    `noise`: its `NOISE` value; `switch`: its `SWITCHES` argument, if it has one, `on` in
    the stochastic registration; `table`: built from a training table (else from the
    model's sigma range: the EDM-preconditioned schedulers).
    """
    init, step = arguments(scheduler_class)
    # A list default (UniPC's disable_corrector = []) cannot be a frozen field's default.
    listed = {p.name: f"list default {p.default!r}" for p in init + step
              if isinstance(p.default, list)}
    keyword = [p.replace(kind=p.KEYWORD_ONLY) for p in init + step if p.name not in listed]
    keyword += [_marker("noise", noise)] + ([_marker("training_table", TABLE_MARK)]
                                            if table else [])
    present = {p.name for p in keyword}
    harness_sets = {**TAKEN, **(TABLE_TAKEN if table else RANGE_TAKEN)}
    taken = {k: why for k, why in harness_sets.items() if k in present}
    taken.update({k: f"{scheduler_class.__name__}.step() never reads it"
                  for k in IGNORED.get(scheduler_class.__name__, ())})
    refused = {k: rule for k, rule in REFUSED.items() if k in present}
    defaults = {}
    if switch is not None:
        rule = SWITCHES[switch]
        registered = f"diffusers:{scheduler_class.__name__}_{rule.suffix}"
        if on:
            defaults[switch] = rule.on
        elif rule.pinned:
            why = f"the library's default, so that no noise is drawn; {registered} sets it"
            taken.update({k: why for k in (switch, *rule.companions) if k in present})
        else:
            why = f"draws noise; {registered} is the stochastic registration"
            refused[switch] = (rule.draws, why)
    docs = {**argument_docs(scheduler_class.__doc__), **argument_docs(
        scheduler_class.step.__doc__), "noise": NOISE[noise], "training_table": TABLE_DOC}
    signature = inspect.Signature(keyword)
    generated = foreign_params(f"{name}Params", signature, taken=taken, docs=docs,
                               defaults=defaults)
    # foreign_params takes no check of its own: the refusals come in as a mixin.
    return type(generated.__name__, (Refusals, generated),
                {"refused": refused, "__doc__": generated.__doc__,
                 "unsupported": {**generated.unsupported, **listed}})


def _marker(name: str, value: str) -> inspect.Parameter:
    """A parameter with one allowed value, logged with every trial."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value,
                             annotation=Literal[value])


def argument_docs(docstring: str | None) -> dict[str, str]:
    """argument -> the first sentence of its entry in a diffusers docstring's Args."""
    lines = (docstring or "").splitlines()
    docs: dict[str, str] = {}
    for i, line in enumerate(lines):
        head, _, rest = line.strip().partition(" (`")
        if not rest or not head.isidentifier() or not line.rstrip().endswith(":"):
            continue
        indent = len(line) - len(line.lstrip())
        text = []
        for follow in lines[i + 1:]:
            if not follow.strip() or len(follow) - len(follow.lstrip()) <= indent:
                break
            text.append(follow.strip())
        sentence = " ".join(text).split(". ")[0].rstrip(".")
        docs.setdefault(head, sentence)
    return docs
