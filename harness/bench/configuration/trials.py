"""A suite expanded into trials: one per (sampler, hyperparameters, schedule, steps,
guidance, seed).

NFE budgets become step counts through each sampler's declared capabilities; every trial
gets a readable name, unique within its suite, and the hash of the configuration that
determines its result (`harness.bench.configuration.canonical`). Given the model's process, every
trial's time grid is built and checked here, before any sampling: a given sigma list
outside the process's range is refused naming the value, and the dry run shows each
grid (`Trial.grid`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ...core.sde import SDE
from ...core.time_grid import ChosenSchedule, TimeGrid
from ...errors import ParameterError
from ...plugin.manager import LoadedPlugins
from .code_identity import code_versions
from .canonical import canonical_hash
from .suite_schema import Suite, SuiteError


@dataclass(frozen=True)
class Trial:
    """One run of one sampler: everything needed to reproduce it, and its hash."""

    name: str
    sampler: str
    params: dict[str, Any]          # every hyperparameter, defaults included
    varied: dict[str, Any]          # the grid values that distinguish it from siblings
    steps: int
    nfe: int                        # expected NFE per sample from the capabilities
    seed: int
    config: dict[str, Any]
    config_hash: str
    #: "trial" (a sampler run) or "floor" (held-out real data, `harness.bench.running.floor`).
    kind: str = "trial"
    #: The classifier-free guidance scale w, or None for an unguided trial.
    guidance: Optional[float] = None
    #: Under guidance, how labels are dealt: "balanced" or a tuple of classes.
    labels: Any = None
    #: The time schedule with its parameters (None for the real-data floor).
    schedule: Optional[ChosenSchedule] = None
    #: The NFE budgets that resolved to these steps (empty when steps were given).
    budgets: tuple[int, ...] = ()
    #: The grid the sampler will see, when the trials were resolved with the process.
    grid: Optional[TimeGrid] = None


def steps_for_budget(sampler: Any, params: Any, budget: int,
                     final_sigma_zero: bool = True) -> int:
    """The number of steps whose counted NFE per sample is closest to `budget`.

    Ties go to fewer steps, so a sampler is never given more than its budget when an
    equally close smaller run exists (e.g. Heun: 2N - 1 NFE; a budget of 10 gives N = 5).
    The NFE grows with the steps, so the answer is the first step count that reaches
    the budget or the one before it, found by bisection. `final_sigma_zero`: whether the
    grid's last step lands on sigma = 0, where a sampler may spend less (Heun's last step
    is Euler); under VE, sigma(0) = sigma_min > 0.
    """
    def nfe(steps: int) -> int:
        return sampler.expected_nfe(steps, params, final_sigma_zero)

    low, high = 1, budget + 1          # nfe(budget + 1) > budget: every step costs >= 1
    while low < high:                  # the first step count with nfe >= budget
        middle = (low + high) // 2
        if nfe(middle) >= budget:
            high = middle
        else:
            low = middle + 1
    if low > 1 and budget - nfe(low - 1) <= nfe(low) - budget:
        return low - 1
    return low


def trial_name(sampler: str, varied: Mapping[str, Any], nfe: int, seed: int,
               guidance: Optional[float] = None, schedule: Optional[str] = None) -> str:
    """Readable and unique within a suite, e.g. `langevin-S_churn=10-35nfe-seed0`, under
    guidance `heun-w=4-19nfe-seed0`, and in a suite of several schedules
    `heun-log_snr-19nfe-seed0` (`schedule`: the schedule's short label)."""
    parts = [sampler] + [f"{k}={short_value(v)}" for k, v in varied.items()]
    if guidance is not None:
        parts.append(f"w={short_value(float(guidance))}")
    if schedule is not None:
        parts.append(schedule)
    return "-".join(parts + [f"{nfe}nfe", f"seed{seed}"])


def short_value(value: Any) -> str:
    """A parameter value as it appears in trial names (floats without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_trials(suite: Suite, plugins: LoadedPlugins,
                   model_identity: Mapping[str, Any],
                   final_sigma_zero: bool = True, sde: Optional[SDE] = None) -> list[Trial]:
    """Every (sampler, hyperparameters, schedule, steps, seed) of the suite, with its
    config hash.

    `model_identity` says which model exactly (name, options, weight hash, SDE); it is
    part of every hash, so new weights never match old results on --resume.
    `final_sigma_zero` is `sde.sigma(0) == 0` for the model's process: it decides what
    the last step costs, so that budgets and names give the NFE really spent. With the
    process (`sde`), every trial's grid is built and checked (`Trial.grid`).
    """
    trials: list[Trial] = []
    grids: dict[tuple[str, int], TimeGrid] = {}
    several = len(suite.schedules) > 1
    for entry, schedule in itertools.product(suite.samplers, suite.schedules):
        sampler = plugins.samplers.get(entry.name)
        code = code_versions(plugins, entry.name, suite.model, suite.metrics,
                             schedule.name)
        for combination in entry.combinations():
            params = sampler.make_params(combination)
            budgets: dict[int, tuple[int, ...]] = {}
            if entry.steps is not None:
                budgets = {steps: () for steps in entry.steps}
            else:
                for b in entry.nfe:
                    steps = steps_for_budget(sampler, params, b, final_sigma_zero)
                    budgets[steps] = (*budgets.get(steps, ()), b)
            varied = {k: combination[k] for k in entry.varied()}
            for steps, scale, seed in itertools.product(
                    sorted(budgets), entry.guidance or (None,), suite.seeds):
                nfe = sampler.expected_nfe(steps, params, final_sigma_zero)
                config = {
                    "model": dict(model_identity), "sampler": entry.name,
                    "params": params.to_dict(), "schedule": schedule.label,
                    "steps": steps, "seed": seed, "num_samples": suite.num_samples,
                    "metrics": suite.metrics, "dtype": suite.dtype,
                    **network_config(suite), **guidance_config(scale, suite.labels),
                    "code": code,
                }
                trials.append(Trial(
                    name=trial_name(entry.name, varied, nfe, seed, scale,
                                    schedule.short_label if several else None),
                    sampler=entry.name, params=params.to_dict(), varied=varied,
                    steps=steps, nfe=nfe, seed=seed, config=config,
                    config_hash=canonical_hash(config), guidance=scale,
                    labels=None if scale is None else suite.labels, schedule=schedule,
                    budgets=budgets[steps],
                    grid=None if sde is None else _grid(suite, schedule, sde, steps, grids)))
    names = [t.name for t in trials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"suite {suite.source}: trials with the same name "
                         f"{', '.join(duplicates)}; give distinct step budgets")
    return trials


def _grid(suite: Suite, schedule: ChosenSchedule, sde: SDE, steps: int,
          built: dict[tuple[str, int], TimeGrid]) -> TimeGrid:
    """The trial's grid, built once per (schedule, steps); a schedule that cannot make it
    (a given sigma outside the process's range) is refused naming the field."""
    key = (schedule.label, steps)
    if key not in built:
        try:
            built[key] = schedule.grid(sde, steps)
        except ParameterError as err:
            labels = [s.label for s in suite.schedules]
            field = ("schedule" if len(labels) == 1
                     else f"schedule[{labels.index(schedule.label)}]")
            raise SuiteError(f"suite {suite.source}: {field}: {err}") from None
    return built[key]


def guidance_config(scale: Optional[float], labels: Any) -> dict[str, Any]:
    """Guidance for the config hash: nothing for an unguided trial (old hashes stand)."""
    if scale is None:
        return {}
    return {"guidance": {"scale": float(scale),
                         "labels": labels if isinstance(labels, str) else list(labels)}}


def network_config(suite: Suite) -> dict[str, Any]:
    """How the network and the sampler loop run, for the config hash: empty for the
    defaults, so that trials recorded before these options existed keep their hashes (and
    --resume finds them). The thread count is not here: it changes how fast, not what is
    computed."""
    config: dict[str, Any] = {}
    if suite.network_dtype != "native":
        config["network_dtype"] = suite.network_dtype
    if suite.compile:
        config["compile"] = True
    if suite.capture != "off":  # compiled kernels may round differently
        config["capture"] = suite.capture
    return config
