"""A plan as `harness run --dry-run` prints it: the resolved configuration, one line per
trial with its NFE budget, the steps it resolved to, the NFE its sampler declares and the
sigma grid it will see, then the floor's draws and the sampling work."""

from __future__ import annotations

import json
from typing import Any

from .plan import FloorDraw, Plan, SamplerRun, reaches
from ..configuration.suite import flatten, short_value


def _toml_like(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str)


def grid_line(run: SamplerRun, plan: Plan) -> str:
    """`karras: sigma 80 .. 0.002 -> 0 [sigma_max]`: the first and last noise level the
    sampler steps from, the final one, and whether the grid starts at sigma_max; for a
    sampler on timesteps of its own, the levels it calls the network at."""
    t = run.trial
    name = t.schedule.short_label if t.schedule is not None else ""
    own = run.levels(plan.model.sde)
    if own:
        return (f"own timesteps (not {name}): network at sigma {own[0]:.4g} .. "
                f"{own[-1]:.4g}, {len(own)} calls")
    s, sigma_max = run.grid.sigma, plan.sigma_max
    start = ("[starts at sigma_max]" if reaches(run.grid, sigma_max)
             else f"[starts below sigma_max = {sigma_max:.4g}]")
    return f"{name}: sigma {s[0]:.4g} .. {s[-2]:.4g} -> {s[-1]:.4g} {start}"


def format_plan(plan: Plan) -> str:
    """The dry run's text; see the module docstring."""
    suite, runs = plan.suite, plan.sampler_runs
    lines = [f"suite {suite.name} ({suite.source})"]
    lines += [f"  {k} = {_toml_like(v)}" for k, v in flatten(suite.to_dict()).items()]
    if plan.memory_note:
        lines.append(f"note: {plan.memory_note}")
    lines.append(f"{len(runs)} trials: name, NFE budget -> steps and the NFE the sampler "
                 f"declares, config hash, schedule: the grid's first and last sigma before "
                 f"its final step -> its final sigma [whether it starts at sigma_max], "
                 f"hyperparameters")
    width = max((len(run.trial.name) for run in runs), default=0)
    budgets = [",".join(map(str, run.trial.budgets)) for run in runs]
    budget_width = max((len(b) for b in budgets), default=0)
    for run, budget in zip(runs, budgets):
        t = run.trial
        params = ", ".join(f"{k}={short_value(v)}" for k, v in t.params.items())
        # Trials given steps, not budgets, leave the column blank.
        asked = (f"budget={budget:<{budget_width}} -> " if budget
                 else " " * (budget_width + 11) if budget_width else "")
        lines.append(f"  {t.name:<{width}}  {asked}steps={t.steps:<4} nfe={t.nfe:<4} "
                     f"{t.config_hash[:12]}  {grid_line(run, plan)}  {params}".rstrip())
    floor = [entry.trial for entry in plan.entries if isinstance(entry, FloorDraw)]
    if floor:
        lines.append(f"{len(floor)} real-data floor draws (the set metrics on held-out "
                     f"real samples, no sampler): "
                     + ", ".join(f"{t.name} {t.config_hash[:12]}" for t in floor))
    if plan.skipped:
        lines.append(f"{len(plan.skipped)} skipped (finished before; --resume): "
                     + ", ".join(t.name for t in plan.skipped))
    lines.append(f"sampling work: {plan.sampling_work:,} network evaluations "
                 f"(sample rows), not counting metrics")
    return "\n".join(lines)
