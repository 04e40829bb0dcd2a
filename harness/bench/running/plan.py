"""A suite resolved for one loaded model and one process: the plan a run carries out.

Everything a run needs to know is decided here, once, after the model has loaded and
before anything is computed:

* each sampler trial's validated `Params`, steps (from its NFE budget), time grid, and
  the network rows one evaluation of one sample costs (2 under guidance with w not in
  {0, 1}: one doubled batch; `harness.core.guidance.network_rows`);
* the real-data floor's draws, as entries of their own (`FloorDraw`: no sampler, no
  steps), before the sampler trials;
* the sample indices this process draws (its shard under torchrun) and the batch size,
  which the memory guard may have lowered (`harness.bench.running.guards`; batches change memory,
  never results, since samples are seeded one by one);
* which trials are skipped because they finished before (`--resume`).

`harness run --dry-run` prints this plan and `run_plan` (`harness.bench.running.runner`) runs it:
the runner reads the plan and re-derives none of it, so what the dry run shows is what
runs (`Plan.to_json` is the same for both, and a run keeps it as `plan.json`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch

from ...core import distributed
from ...core.guidance import network_rows
from ...core.model import ScoreModel
from ...core.sampler import Params, Sampler
from ...core.time_grid import TimeGrid
from ...models.precision import STATE_DTYPES
from ...plugin.manager import LoadedPlugins
from .floor import floor_trials
from .guards import plan_memory
from ..recording.sinks import strict_json
from ..configuration.suite import (Suite, SuiteError, Trial, check_conditional,
                                   check_trained, model_identity, resolve_trials)


@dataclass(frozen=True)
class SamplerRun:
    """A sampler trial as it will run."""

    #: Its identity in the records: name, configuration, hash.
    trial: Trial
    sampler: Sampler
    params: Params
    grid: TimeGrid
    #: Network rows per evaluation of one sample (1, or 2 for a doubled guided batch).
    network_rows: int

    def levels(self, sde: Any) -> Optional[list[float]]:
        """The noise levels the sampler calls the network at when it chooses its own
        (its function's `levels(params, sde, steps)`, as an adapted diffusers scheduler
        has), else None: it steps on `grid`."""
        own = getattr(self.sampler.fn, "levels", None)
        return own(self.params, sde, self.trial.steps) if callable(own) else None


@dataclass(frozen=True)
class FloorDraw:
    """One draw of held-out real data measured by the set metrics (`harness.bench.running.floor`)."""

    trial: Trial
    #: Which draw: it seeds the choice of the real samples.
    draw: int


Entry = Union[SamplerRun, FloorDraw]


@dataclass(frozen=True)
class Plan:
    """A suite resolved for `model` on this process; see the module docstring."""

    suite: Suite
    plugins: LoadedPlugins
    model: ScoreModel
    device: torch.device
    model_identity: dict[str, Any]
    #: The sample indices this process draws, in order (all of them in one process).
    samples: tuple[int, ...]
    #: Samples per batch: the suite's, or the memory guard's smaller one.
    batch_size: int
    #: In the order they run: the floor's draws, then the sampler trials.
    entries: tuple[Entry, ...]
    #: Trials of the suite that finished before (`--resume`) and do not run again.
    skipped: tuple[Trial, ...] = ()
    #: Why the batch size is not the suite's (empty when it is).
    memory_note: str = ""

    @property
    def trials(self) -> list[Trial]:
        """The records' identities of what runs, in order."""
        return [entry.trial for entry in self.entries]

    @property
    def sampler_runs(self) -> list[SamplerRun]:
        return [entry for entry in self.entries if isinstance(entry, SamplerRun)]

    @property
    def network_rows(self) -> tuple[int, ...]:
        """The distinct network rows per evaluation the trials use (warm-up shapes)."""
        return tuple(sorted({run.network_rows for run in self.sampler_runs} | {1}))

    @property
    def sigma_max(self) -> float:
        return float(self.model.sde.sigma(self.model.sde.T))

    @property
    def sampling_work(self) -> int:
        """Network rows the sampler trials cost in all processes (metrics not counted)."""
        return sum(run.trial.nfe * run.network_rows
                   for run in self.sampler_runs) * self.suite.num_samples

    def batches(self) -> list[list[int]]:
        """This process's sample indices, cut into the plan's batches."""
        mine, size = list(self.samples), self.batch_size
        return [mine[first:first + size] for first in range(0, len(mine), size)]

    def to_json(self) -> dict[str, Any]:
        """The plan as plain JSON: the suite as resolved, and every entry with its whole
        grid; what `--dry-run --json` prints and a run keeps as `plan.json`."""
        sigma_max = self.sigma_max
        trials = []
        for run in self.sampler_runs:
            t, grid = run.trial, run.grid
            trials.append({
                "name": t.name, "sampler": t.sampler, "params": t.params,
                "schedule": t.schedule.label if t.schedule is not None else None,
                "budgets": list(t.budgets), "steps": t.steps, "nfe_declared": t.nfe,
                "seed": t.seed, "guidance": t.guidance,
                "network_rows_per_evaluation": run.network_rows,
                "config_hash": t.config_hash, "own_levels": run.levels(self.model.sde),
                "grid": {"t": list(grid.t), "sigma": list(grid.sigma),
                         "scale": list(grid.scale), "first_sigma": grid.sigma[0],
                         "last_sigma": grid.sigma[-2], "final_sigma": grid.sigma[-1],
                         "reaches_sigma_max": reaches(grid, sigma_max)}})
        floor = [{"name": e.trial.name, "draw": e.draw, "config_hash": e.trial.config_hash}
                 for e in self.entries if isinstance(e, FloorDraw)]
        return strict_json({
            "suite": self.suite.to_dict(), "model_identity": self.model_identity,
            "sigma_max": sigma_max, "batch_size": self.batch_size,
            "memory_note": self.memory_note,
            "processes": distributed.world_size(), "samples_here": len(self.samples),
            "floor": floor, "trials": trials, "skipped": [t.name for t in self.skipped],
            "sampling_work": self.sampling_work})


def reaches(grid: TimeGrid, sigma_max: float) -> bool:
    """Whether a grid starts at the process's largest noise level (up to rounding)."""
    return grid.sigma[0] >= sigma_max * (1 - 1e-9)


def lands_on_zero(model: ScoreModel) -> bool:
    """Whether a grid's last step reaches sigma = 0 under the model's process (not VE,
    whose sigma(0) = sigma_min): the NFE a sampler's last step costs depends on it."""
    return float(model.sde.sigma(0.0)) == 0.0


def resolve_plan(suite: Suite, plugins: LoadedPlugins, model: ScoreModel,
                 device: torch.device, finished: Callable[[], set[str]] = set,
                 guard_memory: bool = True) -> Plan:
    """The plan of `suite` on the loaded `model` for this process.

    `finished()` gives the configuration hashes already recorded as FINISHED (`--resume`;
    asked only once the trials are known); their entries are skipped. `guard_memory`:
    check the samples fit and lower the batch size if a batch does not (a dry run on
    another device than the run's skips it). Raises `SuiteError` for what cannot run.
    """
    world = distributed.world_size()
    if suite.num_samples < world:
        raise SuiteError(f"num_samples = {suite.num_samples} cannot be shared by {world} "
                         f"processes")
    check_conditional(suite, model.num_classes)
    check_trained(suite, plugins, model.trained)
    samples = tuple(distributed.shard(range(suite.num_samples)))
    identity = model_identity(suite, model)
    trials = resolve_trials(suite, plugins, identity, lands_on_zero(model), model.sde)
    runs = [_sampler_run(trial, plugins) for trial in trials]
    memory_note, batch_size = "", suite.batch_size
    if guard_memory:
        with distributed.shared_failure():  # before any large allocation, on every rank
            memory = plan_memory(model, STATE_DTYPES[suite.dtype], suite.num_samples,
                                 suite.batch_size, device, len(samples),
                                 guided=any(run.network_rows > 1 for run in runs),
                                 stream=suite.stream)
        memory_note, batch_size = memory.note, memory.batch_size
    floor = [FloorDraw(trial, trial.seed)
             for trial in floor_trials(suite, plugins, model, identity)]
    entries: list[Entry] = [*floor, *runs]
    done = finished() if entries else set()
    return Plan(suite=dataclasses.replace(suite, batch_size=batch_size), plugins=plugins,
                model=model, device=device, model_identity=identity, samples=samples,
                batch_size=batch_size,
                entries=tuple(e for e in entries if e.trial.config_hash not in done),
                skipped=tuple(e.trial for e in entries if e.trial.config_hash in done),
                memory_note=memory_note)


def _sampler_run(trial: Trial, plugins: LoadedPlugins) -> SamplerRun:
    sampler = plugins.samplers.get(trial.sampler)
    return SamplerRun(trial=trial, sampler=sampler, params=sampler.make_params(trial.params),
                      grid=trial.grid, network_rows=network_rows(trial.guidance))
