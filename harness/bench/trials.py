"""A suite expanded into trials: one per (sampler, hyperparameters, steps, guidance, seed).

NFE budgets become step counts through each sampler's declared capabilities; every trial
gets a readable name, unique within its suite, and the hash of the configuration that
determines its result (`harness.bench.canonical`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..plugin.manager import LoadedPlugins
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
    #: "trial" (a sampler run) or "floor" (held-out real data, `harness.bench.floor`).
    kind: str = "trial"
    #: The classifier-free guidance scale w, or None for an unguided trial.
    guidance: Optional[float] = None
    #: Under guidance, how labels are dealt: "balanced" or a tuple of classes.
    labels: Any = None


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
               guidance: Optional[float] = None) -> str:
    """Readable and unique within a suite, e.g. `langevin-S_churn=10-35nfe-seed0`, and
    under guidance `heun-w=4-19nfe-seed0`."""
    parts = [sampler] + [f"{k}={short_value(v)}" for k, v in varied.items()]
    if guidance is not None:
        parts.append(f"w={short_value(float(guidance))}")
    return "-".join(parts + [f"{nfe}nfe", f"seed{seed}"])


def short_value(value: Any) -> str:
    """A parameter value as it appears in trial names (floats without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_trials(suite: Suite, plugins: LoadedPlugins,
                   model_identity: Mapping[str, Any],
                   final_sigma_zero: bool = True) -> list[Trial]:
    """Every (sampler, hyperparameters, steps, seed) of the suite, with its config hash.

    `model_identity` says which model exactly (name, options, weight hash, SDE); it is
    part of every hash, so new weights never match old results on --resume.
    `final_sigma_zero` is `sde.sigma(0) == 0` for the model's process: it decides what
    the last step costs, so that budgets and names give the NFE really spent.
    """
    trials: list[Trial] = []
    for entry in suite.samplers:
        sampler = plugins.samplers.get(entry.name)
        code = code_versions(plugins, entry.name, suite.model, suite.metrics)
        for combination in entry.combinations():
            params = sampler.make_params(combination)
            if entry.steps is not None:
                step_list = list(entry.steps)
            else:
                step_list = sorted({steps_for_budget(sampler, params, b, final_sigma_zero)
                                    for b in entry.nfe})
            varied = {k: combination[k] for k in entry.varied()}
            for steps, scale, seed in itertools.product(
                    step_list, entry.guidance or (None,), suite.seeds):
                nfe = sampler.expected_nfe(steps, params, final_sigma_zero)
                config = {
                    "model": dict(model_identity), "sampler": entry.name,
                    "params": params.to_dict(), "schedule": suite.schedule,
                    "steps": steps, "seed": seed, "num_samples": suite.num_samples,
                    "metrics": suite.metrics, "dtype": suite.dtype,
                    **network_config(suite), **guidance_config(scale, suite.labels),
                    "code": code,
                }
                trials.append(Trial(
                    name=trial_name(entry.name, varied, nfe, seed, scale),
                    sampler=entry.name, params=params.to_dict(), varied=varied,
                    steps=steps, nfe=nfe, seed=seed, config=config,
                    config_hash=canonical_hash(config), guidance=scale,
                    labels=None if scale is None else suite.labels))
    names = [t.name for t in trials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"suite {suite.source}: trials with the same name "
                         f"{', '.join(duplicates)}; give distinct step budgets")
    return trials


def guidance_config(scale: Optional[float], labels: Any) -> dict[str, Any]:
    """Guidance for the config hash: nothing for an unguided trial (old hashes stand)."""
    if scale is None:
        return {}
    return {"guidance": {"scale": float(scale),
                         "labels": labels if isinstance(labels, str) else list(labels)}}


def network_config(suite: Suite) -> dict[str, Any]:
    """How the network runs, for the config hash: empty for the defaults, so that trials
    recorded before these options existed keep their hashes (and --resume finds them).
    The thread count is not here: it changes how fast, not what is computed."""
    config: dict[str, Any] = {}
    if suite.network_dtype != "native":
        config["network_dtype"] = suite.network_dtype
    if suite.compile:
        config["compile"] = True
    return config
