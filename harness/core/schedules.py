"""The built-in time schedules, each from its source, and `make_grid`.

Every schedule gives the N times a grid of N steps visits before its final step to
t = 0 (`harness.core.time_grid`); the names below are registered by the built-in plugin
`plugins/schedules.py`, the same door a third-party schedule comes through. σ_max and
σ_min are the process's σ(T) and σ(t_min).

`karras`, `log_snr` and `uniform_t` are bit-for-bit the grids the committed results were
made with; keep them so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from ..errors import ParameterError, unknown_name
from .sampler import NoParams, Params, param
from .sde import SDE
from .time_grid import (ChosenSchedule, Schedule, TimeGrid, sigma_range, spaced,
                        times_of_sigmas)

__all__ = ["SCHEDULES", "ChosenSchedule", "Schedule", "TimeGrid", "make_grid"]


def uniform_t(sde: SDE, steps: int, params: Params) -> list[float]:
    """Uniform in t from T to t_min."""
    return spaced(sde.T, sde.t_min, steps)


@dataclass(frozen=True)
class RhoParams(Params):
    rho: float = param(7.0, gt=0.0, doc="the warping exponent (7: EDM's choice)")


def karras(sde: SDE, steps: int, params: RhoParams) -> list[float]:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    lo, hi, rho = *sigma_range(sde), params.rho
    sigmas = [r**rho for r in spaced(hi ** (1 / rho), lo ** (1 / rho), steps)]
    return times_of_sigmas(sde, sigmas)


def log_snr(sde: SDE, steps: int, params: Params) -> list[float]:
    """Uniform in log-SNR = -2 log sigma between sigma_max and sigma_min."""
    lo, hi = sigma_range(sde)
    return times_of_sigmas(sde, [math.exp(v) for v in spaced(math.log(hi), math.log(lo),
                                                             steps)])


@dataclass(frozen=True)
class EpsParams(Params):
    eps_s: float = param(1e-3, gt=0.0, lt=1.0, doc="the VP time where the grid ends")


def edm_vp(sde: SDE, steps: int, params: EpsParams) -> list[float]:
    """Uniform in the time of a VP process fitted to this one's sigma range (EDM's 'vp')."""
    lo, hi = sigma_range(sde)
    eps = params.eps_s
    # sigma_vp(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1 through sigma_max at t = 1 and
    # sigma_min at t = eps: two linear equations in (beta_d, beta_min).
    beta_d = 2 * (math.log(lo**2 + 1) / eps - math.log(hi**2 + 1)) / (eps - 1)
    beta_min = math.log(hi**2 + 1) - beta_d / 2
    vp_times = spaced(1.0, eps, steps)
    return times_of_sigmas(sde, [math.sqrt(math.expm1(beta_d * t**2 / 2 + beta_min * t))
                                 for t in vp_times])


@dataclass(frozen=True)
class DDIMParams(Params):
    train_steps: int = param(1000, ge=5, doc="M, the discrete model's timesteps; index i "
                             "is t = t_min + i (T - t_min) / (M - 1)")
    quantize: bool = param(True, doc="floor the indices to integers (DDIM's code); "
                           "false keeps the spacing's own values")


def _ddim_times(sde: SDE, steps: int, indices: list[float], train_steps: int) -> list[float]:
    """Training-time indices (ascending) as times, descending: index 0 is t_min, index
    M - 1 is T (for VP with T = 1, t_min = 1e-3, M = 1000: t = (i + 1) / 1000)."""
    for k in range(1, len(indices)):
        if indices[k] <= indices[k - 1]:
            raise ParameterError(
                f"{steps} steps repeat training index {indices[k]:g} of {train_steps} (the "
                f"spacing floored to integers); use fewer steps or quantize = false")
    width = (sde.T - sde.t_min) / (train_steps - 1)
    return [sde.t_min + i * width for i in reversed(indices)]


def ddim_uniform(sde: SDE, steps: int, params: DDIMParams) -> list[float]:
    """DDIM's uniform spacing: indices 0, c, ..., (N-1) c with c = M // N; never at T."""
    m = params.train_steps
    if steps > m:
        raise ParameterError(f"ddim_uniform has at most train_steps = {m} steps, got {steps}")
    stride = m // steps if params.quantize else m / steps
    return _ddim_times(sde, steps, [k * stride for k in range(steps)], m)


def ddim_quadratic(sde: SDE, steps: int, params: DDIMParams) -> list[float]:
    """DDIM's quadratic spacing: indices (k sqrt(0.8 M) / (N-1))^2 for k = 0 .. N-1."""
    m = params.train_steps
    root = spaced(0.0, math.sqrt(QUADRATIC_END * m), steps)
    indices = [float(int(r**2)) if params.quantize else r**2 for r in root]
    return _ddim_times(sde, steps, indices, m)


#: DDIM's quadratic spacing ends at this fraction of the training steps (its code's 0.8).
QUADRATIC_END = 0.8


@dataclass(frozen=True)
class PolyParams(Params):
    rho: float = param(1.0, gt=0.0, doc="the ramp's exponent (1: uniform in log sigma)")


def polyexponential(sde: SDE, steps: int, params: PolyParams) -> list[float]:
    """log sigma_i = log sigma_min + (1 - i/(N-1))^rho (log sigma_max - log sigma_min)."""
    lo, hi = sigma_range(sde)
    ramp = [r**params.rho for r in spaced(1.0, 0.0, steps)]
    return times_of_sigmas(sde, [math.exp(r * (math.log(hi) - math.log(lo)) + math.log(lo))
                                 for r in ramp])


#: A given list holds at most this many levels: its exact label is logged as an MLflow
#: param, which holds 6000 characters.
MAX_GIVEN_LEVELS = 200


@dataclass(frozen=True)
class SigmaListParams(Params):
    sigmas: tuple[float, ...] = param((), doc="n + 1 descending noise levels of an n-step "
                                      "schedule; the last is where its final step would "
                                      "end (replaced by t = 0, as Align Your Steps does)")

    def check(self) -> None:
        levels = self.sigmas
        if not 2 <= len(levels) <= MAX_GIVEN_LEVELS:
            raise ParameterError(f"sigmas must hold 2 to {MAX_GIVEN_LEVELS} noise levels, "
                                 f"got {len(levels)}")
        for i, level in enumerate(levels):
            if not (math.isfinite(level) and level > 0):
                raise ParameterError(f"sigmas[{i}] = {level!r} must be a finite number > 0")
            if i and not level < levels[i - 1]:
                raise ParameterError(f"sigmas[{i}] = {level!r} must be below sigmas[{i - 1}]"
                                     f" = {levels[i - 1]!r}: noise levels descend")


def sigma_list(sde: SDE, steps: int, params: SigmaListParams) -> list[float]:
    """Given noise levels, log-linearly interpolated to other step counts (AYS)."""
    lo, hi = sigma_range(sde)
    for i, level in enumerate(params.sigmas):
        if not lo <= level <= hi:
            side = (f"above sigma(T) = {hi:.6g}, the largest" if level > hi
                    else f"below sigma(t_min) = {lo:.6g}, the smallest")
            raise ParameterError(f"sigmas[{i}] = {level!r} is {side} noise level of the "
                                 f"{sde.name} process")
    levels = loglinear(params.sigmas, steps + 1)
    return times_of_sigmas(sde, levels[:steps], pin_ends=False)


def loglinear(levels: tuple[float, ...], count: int) -> list[float]:
    """`count` levels whose logs interpolate the given ones' linearly over evenly spaced
    positions, the ends kept; the given levels themselves when the count matches."""
    if count == len(levels):
        return list(levels)
    logs = [math.log(level) for level in levels]
    out = []
    for j in range(count):
        position = j * (len(levels) - 1) / (count - 1)
        k = min(int(position), len(levels) - 2)
        out.append(math.exp(logs[k] + (position - k) * (logs[k + 1] - logs[k])))
    return out


#: The built-in schedules, as `plugins/schedules.py` registers them.
SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule("karras", karras, RhoParams, "Karras et al. 2022, Eq. 5"),
    Schedule("log_snr", log_snr, NoParams, "Lu et al. 2022 (DPM-Solver), uniform in lambda"),
    Schedule("uniform_t", uniform_t, NoParams, "Song et al. 2021, uniform in t"),
    Schedule("edm_vp", edm_vp, EpsParams,
             "Karras et al. 2022, Table 1 (VP time steps, beta fitted to the range as in "
             "EDM's generate.py)"),
    Schedule("ddim_uniform", ddim_uniform, DDIMParams,
             "Song, Meng & Ermon 2021 (DDIM), App. D.2, linear tau_i (code: skip = M // N)"),
    Schedule("ddim_quadratic", ddim_quadratic, DDIMParams,
             "Song, Meng & Ermon 2021 (DDIM), App. D.2, quadratic tau_i (code: up to 0.8 M)"),
    Schedule("polyexponential", polyexponential, PolyParams,
             "k-diffusion get_sigmas_polyexponential (Crowson 2022)"),
    Schedule("sigma_list", sigma_list, SigmaListParams,
             "Sabour et al. 2024 (Align Your Steps), loglinear_interp"),
)}


def make_grid(sde: SDE, schedule: Union[str, Schedule, ChosenSchedule], steps: int
              ) -> TimeGrid:
    """The grid of `steps` steps of a schedule at its default parameters: a built-in's
    name, or any `Schedule` (a plugin's: `get_plugins().schedules.get(name)`) or
    `ChosenSchedule`. Refuses unknown names and steps < 1."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise unknown_name("schedule", schedule, SCHEDULES)
        schedule = SCHEDULES[schedule]
    chosen = schedule.choose() if isinstance(schedule, Schedule) else schedule
    return chosen.grid(sde, steps)
