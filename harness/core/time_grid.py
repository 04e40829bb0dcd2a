"""Time grids, and the schedule contract that makes them. The harness, not the sampler,
owns the grid.

A grid of N steps has N + 1 times t_0 > t_1 > ... > t_{N-1} > t_N = 0 (Karras et al.
2022, Eq. 5 and Table 1): a schedule chooses the first N, within [t_min, T], and the
last step always lands on t = 0. Grids hold plain Python floats so that samplers index
them without tensor ops or device syncs.

A schedule is a function

    fn(sde, steps, params) -> the N times t_0 > ... > t_{N-1}, within [t_min, T]

with a `Params` class (declared ranges, as a sampler's) and a citation, registered as a
`Schedule` through the `harness_register_schedules` hook. A schedule defined in noise
levels converts them with `times_of_sigmas`. A schedule need not start at T (DDIM's
spacings do not): sampling then starts from the prior's draw at T as if it were at t_0,
as those samplers do, and the metrics measure what that costs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import ParameterError, unknown_name
from .sampler import NoParams, Params
from .sde import SDE


@dataclass(frozen=True)
class TimeGrid:
    """Times t_i with their noise levels sigma(t_i) and scales s(t_i)."""

    t: tuple[float, ...]
    sigma: tuple[float, ...]
    scale: tuple[float, ...]
    schedule: str = "custom"

    @classmethod
    def from_times(cls, sde: SDE, times, schedule: str = "custom") -> "TimeGrid":
        times = tuple(float(t) for t in times)
        if len(times) < 2:
            raise ParameterError("a time grid needs at least two points")
        return cls(times, tuple(float(sde.sigma(t)) for t in times),
                   tuple(float(sde.scale(t)) for t in times), schedule)

    @property
    def steps(self) -> int:
        return len(self.t) - 1

    def reversed(self) -> "TimeGrid":
        """The same points in the opposite direction (for integrating data -> noise)."""
        return TimeGrid(self.t[::-1], self.sigma[::-1], self.scale[::-1], self.schedule)


# --- helpers for schedule functions ----------------------------------------------------

def spaced(start: float, stop: float, n: int) -> list[float]:
    """n evenly spaced values from start to stop, both included (one value: start)."""
    if n == 1:
        return [start]
    return [start + i / (n - 1) * (stop - start) for i in range(n)]


def sigma_range(sde: SDE) -> tuple[float, float]:
    """(sigma(t_min), sigma(T)): the noise levels a grid's first N points may take."""
    return float(sde.sigma(sde.t_min)), float(sde.sigma(sde.T))


def times_of_sigmas(sde: SDE, sigmas: Sequence[float], pin_ends: bool = True
                    ) -> list[float]:
    """The times of these noise levels. `pin_ends`: the levels run from sigma(T) to
    sigma(t_min), so the ends are set to T and t_min exactly (the inversion is exact only
    up to rounding); otherwise each time is clipped into [t_min, T]."""
    times = [float(sde.t_of_sigma(s)) for s in sigmas]
    if pin_ends:
        times[0] = sde.T
        times[-1] = sde.t_min if len(times) > 1 else times[-1]
        return times
    return [min(sde.T, max(sde.t_min, t)) for t in times]


# --- the contract ----------------------------------------------------------------------

ScheduleFn = Callable[[SDE, int, Any], Sequence[float]]
#: A schedule's label longer than this (a given sigma list) appears in trial names and
#: tables as its name and a digest of the label (the configuration hash holds it whole).
SHORT_LABEL_CHARS = 32
DIGEST_CHARS = 6
#: Relative slack on the ends of [t_min, T] for a schedule's times: rounding, not range.
RANGE_ROUNDING = 1e-9


@dataclass(frozen=True)
class Schedule:
    """A registered time schedule: its function, parameters and source."""

    name: str
    fn: ScheduleFn
    params: type[Params] = NoParams
    citation: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ParameterError(f"schedule name must be alphanumeric with _ or -, "
                                 f"got {self.name!r}")
        if not (isinstance(self.params, type) and issubclass(self.params, Params)):
            raise ParameterError(f"schedule {self.name!r}: params must be a Params subclass")
        if not callable(self.fn):
            raise ParameterError(f"schedule {self.name!r}: fn must be callable")

    @property
    def summary(self) -> str:
        doc = (self.fn.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def choose(self, values: Optional[Mapping[str, Any]] = None) -> "ChosenSchedule":
        """This schedule with validated parameters; errors name the schedule and the
        parameter. A list (as TOML gives it) is taken for a tuple-valued parameter."""
        values = dict(values or {})
        known = [f.name for f in fields(self.params)]
        for key in values:
            if key not in known:
                problem = (f"unknown parameter {key!r}: it has no parameters" if not known
                           else str(unknown_name("parameter", key, known)))
                raise ParameterError(f"schedule {self.name!r}: {problem}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            params = self.params(**values)
        except ParameterError as err:
            raise ParameterError(f"schedule {self.name!r}: {err}") from None
        return ChosenSchedule(self, params)

    def grid(self, sde: SDE, steps: int, params: Optional[Params] = None) -> TimeGrid:
        """The grid of `steps` steps at `params` (default: the declared defaults)."""
        return (self.choose() if params is None else ChosenSchedule(self, params)
                ).grid(sde, steps)


@dataclass(frozen=True)
class ChosenSchedule:
    """A schedule with its parameters: what a suite names and a trial runs."""

    schedule: Schedule
    params: Params

    @property
    def name(self) -> str:
        return self.schedule.name

    def changed(self) -> dict[str, Any]:
        """The parameters that differ from their declared defaults."""
        return {f.name: getattr(self.params, f.name) for f in fields(self.params)
                if getattr(self.params, f.name) != f.default}

    @property
    def label(self) -> str:
        """Exact: `karras`, or with its changed parameters `karras(rho=5.0)` (every
        digit). Part of the configuration hash and logged as the trial's `schedule`:
        defaults left out, so a schedule without changes hashes as its bare name."""
        changed = self.changed()
        if not changed:
            return self.name
        return f"{self.name}({', '.join(f'{k}={_exact(v)}' for k, v in changed.items())})"

    @property
    def short_label(self) -> str:
        """For trial names and tables (`short_label`)."""
        return short_label(self.label)

    def grid(self, sde: SDE, steps: int) -> TimeGrid:
        """The grid: the schedule's N times, checked, then the final step to t = 0."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ParameterError(f"steps must be an integer >= 1, got {steps!r}")
        times = [float(t) for t in self.schedule.fn(sde, steps, self.params)]
        _check_times(f"schedule {self.short_label!r} at {steps} steps", sde, steps, times)
        return TimeGrid.from_times(sde, times + [0.0], self.label)


def short_label(label: str) -> str:
    """A schedule's label as trial names and tables show it: the label itself up to
    `SHORT_LABEL_CHARS`, else the schedule's name and a digest of the whole label
    (`sigma_list(#3fa9c2)`). A function of the label alone, so that a report made from
    recorded labels names rows as the trials were named."""
    if len(label) <= SHORT_LABEL_CHARS:
        return label
    digest = hashlib.sha256(label.encode()).hexdigest()[:DIGEST_CHARS]
    return f"{label.partition('(')[0]}(#{digest})"


def _exact(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _check_times(where: str, sde: SDE, steps: int, times: list[float]) -> None:
    """A schedule's times: N of them, finite, descending, within [t_min, T]."""
    if len(times) != steps:
        raise ParameterError(f"{where} gave {len(times)} times instead of {steps}")
    # Evenly spaced times reach t_min only up to rounding (T + 1.0 * (t_min - T)).
    low, high = sde.t_min * (1 - RANGE_ROUNDING), sde.T * (1 + RANGE_ROUNDING)
    for i, t in enumerate(times):
        if not math.isfinite(t) or not low <= t <= high:
            raise ParameterError(f"{where}: t_{i} = {t!r} is outside [t_min, T] = "
                                 f"[{sde.t_min}, {sde.T}]")
        if i and not t < times[i - 1]:
            raise ParameterError(f"{where}: t_{i} = {t!r} is not below t_{i - 1} = "
                                 f"{times[i - 1]!r}; the times must descend")
