"""Time grids: where a sampler evaluates the model. The harness, not the sampler, owns them.

A grid of N steps has N + 1 times t_0 = T > t_1 > ... > t_{N-1} = t_min > t_N = 0 (as in
Karras et al. 2022, Eq. 5 and Table 1): the first N points follow the named spacing
between the SDE's T and t_min, and the last step always lands on t = 0. Grids hold
plain Python floats so that samplers index them without tensor ops or device syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..errors import ParameterError, unknown_name
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


def _spaced(start: float, stop: float, n: int) -> list[float]:
    if n == 1:
        return [start]
    return [start + i / (n - 1) * (stop - start) for i in range(n)]


def uniform_t(sde: SDE, steps: int) -> TimeGrid:
    """Uniform in t from T to t_min (Song et al. 2021)."""
    return TimeGrid.from_times(sde, _spaced(sde.T, sde.t_min, steps) + [0.0], "uniform_t")


def karras(sde: SDE, steps: int, rho: float = 7.0) -> TimeGrid:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    lo, hi = float(sde.sigma(sde.t_min)), float(sde.sigma(sde.T))
    sigmas = [r**rho for r in _spaced(hi ** (1 / rho), lo ** (1 / rho), steps)]
    return TimeGrid.from_times(sde, _times(sde, sigmas) + [0.0], "karras")


def log_snr(sde: SDE, steps: int) -> TimeGrid:
    """Uniform in log-SNR = -2 log sigma between sigma(T) and sigma(t_min)."""
    lo, hi = float(sde.sigma(sde.t_min)), float(sde.sigma(sde.T))
    sigmas = [math.exp(v) for v in _spaced(math.log(hi), math.log(lo), steps)]
    return TimeGrid.from_times(sde, _times(sde, sigmas) + [0.0], "log_snr")


def _times(sde: SDE, sigmas: list[float]) -> list[float]:
    times = [float(sde.t_of_sigma(s)) for s in sigmas]
    # The inversions are exact up to rounding; pin the ends so grids span [t_min, T].
    times[0] = sde.T
    times[-1] = sde.t_min if len(times) > 1 else times[-1]
    return times


SCHEDULES: dict[str, Callable[[SDE, int], TimeGrid]] = {
    "uniform_t": uniform_t,
    "karras": karras,
    "log_snr": log_snr,
}


def make_grid(sde: SDE, schedule: str, steps: int) -> TimeGrid:
    """The named grid with `steps` steps; refuses unknown names and steps < 1."""
    if schedule not in SCHEDULES:
        raise unknown_name("schedule", schedule, SCHEDULES)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ParameterError(f"steps must be an integer >= 1, got {steps!r}")
    return SCHEDULES[schedule](sde, steps)
