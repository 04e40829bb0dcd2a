"""What a log shows while a suite runs: one line per trial, where its time went, an ETA.

A trial's time is its sampling, its metrics and a little bookkeeping. Where a metric
takes a large share (`ode_error`'s reference solves, the first time a seed is seen), the
line says so, so that nobody waits on a cost without knowing its cause.

The ETA predicts each remaining trial from those already done, by kind: a real-data
floor draw costs what the floor draws so far cost; a sampler trial costs its budget
times the median sampling seconds per NFE, plus the median time the rest of a trial
took (metrics, bookkeeping). Medians, so that one-time work (reference solves, caches
filled on the first trial of a seed) does not inflate the estimate for every later
trial; by kind, so that a few quick floor draws at the start do not make a long suite
look short. Before any sampler trial has ended there is nothing to predict it from, and
the line says so instead of guessing.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from ..recording.sinks import FINISHED, TrialResult

#: A metric is named on the trial's line when it took at least this share of the trial,
#: and at least `NOTABLE_SECONDS`.
NOTABLE_SHARE = 0.1
NOTABLE_SECONDS = 0.1


def trial_seconds(result: TrialResult) -> float:
    return result.ended - result.started


def breakdown(result: TrialResult, metric_names: Iterable[str]) -> str:
    """"sampling 1.1 s; ode_error 38.9 s": the sampling time and each metric that took
    at least `NOTABLE_SHARE` of the trial (and `NOTABLE_SECONDS`), largest first ("" when nothing was timed)."""
    total = trial_seconds(result)
    parts = []
    sampling = result.metrics.get("wall_clock_s")
    if sampling is not None:
        parts.append(f"sampling {sampling:.1f} s")
    costs = [(result.metrics[f"{name}_s"], name) for name in metric_names
             if f"{name}_s" in result.metrics]
    for seconds, name in sorted(costs, reverse=True):
        if seconds >= max(NOTABLE_SHARE * total, NOTABLE_SECONDS):
            parts.append(f"{name} {seconds:.1f} s")
    return "; ".join(parts)


class EtaEstimate:
    """Predicts the time the remaining trials of a suite will take (see the module doc)."""

    def __init__(self) -> None:
        self.floor: list[float] = []
        self.per_nfe: list[float] = []
        self.rest: list[float] = []

    def add(self, result: TrialResult) -> None:
        seconds = trial_seconds(result)
        if result.trial.kind == "floor":
            self.floor.append(seconds)
            return
        sampling, nfe = result.metrics.get("wall_clock_s"), result.metrics.get("nfe")
        if result.status != FINISHED or sampling is None or not nfe:
            return  # a failed trial says nothing about what a finished one costs
        self.per_nfe.append(sampling / nfe)
        self.rest.append(max(seconds - sampling, 0.0))

    def remaining(self, trials: Sequence[Any]) -> Optional[float]:
        """Seconds the `trials` will take, or None when a kind among them has no
        finished trial to predict it from."""
        total = 0.0
        for trial in trials:
            if trial.kind == "floor":
                if not self.floor:
                    return None
                total += statistics.median(self.floor)
            else:
                if not self.per_nfe:
                    return None
                total += (statistics.median(self.per_nfe) * trial.nfe
                          + statistics.median(self.rest))
        return total


def progress_line(result: TrialResult, done: int, total: int, eta: Optional[float],
                  metric_names: Iterable[str] = ()) -> str:
    """One line per finished trial for logs: name, NFE, seconds and where they went,
    trials left and the ETA (None: not yet predictable)."""
    seconds = trial_seconds(result)
    nfe = result.metrics.get("nfe")
    left = total - done
    status = "" if result.status == FINISHED else f" {result.status}"
    parts = breakdown(result, metric_names)
    when = (duration(eta) if eta is not None
            else "known when a sampler trial has ended") if left else duration(0)
    return (f"[trial {done}/{total}] {result.trial.name}{status}: "
            f"NFE {'-' if nfe is None else f'{nfe:.4g}'}, {seconds:.1f} s"
            f"{f' ({parts})' if parts else ''}; {left} left, ETA {when}")


def duration(seconds: float) -> str:
    """3 s, 4 min 05 s, 1 h 02 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
