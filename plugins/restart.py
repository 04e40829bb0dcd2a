"""Restart sampling: ODE steps, and a noise interval re-entered K times.

Xu, Deng, Cheng, Tian, Liu and Jaakkola (2023), "Restart Sampling for Improving
Generative Processes", Algorithm 1, with the defaults of the authors' CIFAR-10 EDM
configuration (`restart_info = {"0": [3, 2, 0.06, 0.30]}` in Newbeeer/
diffusion_restart_sampling): one interval [sigma_min, sigma_max] = [0.06, 0.30], K = 2
restarts, each back down in 2 Heun steps (their N_Restart = 3 counts the grid points).

The main backward process is Heun's method on the probability-flow ODE along the
harness's grid (Karras et al. 2022, Alg. 1; Euler on the step to sigma = 0). Where it
arrives at the grid point t_min nearest to `sigma_min_restart` (the authors snap the
interval's lower end to the main grid the same way), the state is sent K times

    forward:   x <- (s(t_max) / s(t_min)) x + s(t_max) sqrt(sigma_max^2 - sigma_min^2) z,
               z ~ N(0, I) from the sample's own stream: the forward process's exact
               transition p(x_{t_max} | x_{t_min});
    backward:  Heun steps from t_max down to t_min on a Karras grid (rho = 7) of
               `restart_steps` steps (every one lands at sigma > 0: 2 evaluations each),

then the main ODE goes on from t_min. As the paper's algorithm, and unlike the authors'
benchmark code, no extra churn is added inside the restart steps (their `restart_gamma`,
`S_noise`). t_min is chosen among the grid's points after the start with 0 < sigma <
sigma_max (where the grid ends at sigma > 0, as under VE, its last point is one); a
single step to sigma = 0 has none and runs without restart. So N main steps cost
2N - 1 evaluations (2N where the grid ends at sigma > 0), plus 2 K `restart_steps`
except for that single step.

The declared order is 0, a fixed bias: at a fixed `restart_steps`, as in the paper's
configurations, the error stops falling at that of the restart ODE itself, however many
main steps are taken: on N(mu, 0.5^2 I) under EDM with the defaults, a variance error of
4e-3 (1.5 %) from 64 main steps on; on the conformance kit's Gaussian under VP a weak
error of 1.0e-2, 3.7e-3, 1.9e-3, 1.4e-3 at 16-128 steps, 1.3e-3 at 256-1024. Refined
together with the main steps (`restart_steps` = N / 4), the Heun steps' order 2 returns
(tests/test_restart.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, ParameterError, Params, Sampler, hookimpl, param

from .heun import heun_step

harness_api_version = 1

#: The Karras exponent of the restart intervals' own grids (the authors' code uses the
#: main grid's, 7 in EDM).
RESTART_RHO = 7.0


@dataclass(frozen=True)
class RestartParams(Params):
    sigma_min_restart: float = param(0.06, gt=0.0, doc="lower end of the restart interval "
                                                       "(snapped to the nearest grid point)")
    sigma_max_restart: float = param(0.30, gt=0.0, doc="noise level each restart jumps to")
    restarts: int = param(2, ge=0, doc="K: how many times the interval is re-entered")
    restart_steps: int = param(2, ge=1, doc="Heun steps back down the interval (the "
                                            "paper's N_Restart - 1)")

    def check(self):
        if self.sigma_min_restart >= self.sigma_max_restart:
            raise ParameterError(f"parameter 'sigma_min_restart' ({self.sigma_min_restart}) "
                                 f"must be below 'sigma_max_restart' "
                                 f"({self.sigma_max_restart})")


def restart_index(grid, params):
    """The grid point after the start with 0 < sigma < sigma_max_restart nearest to
    sigma_min_restart, or None where there is no point with sigma > 0 after the start
    (a single step to sigma = 0)."""
    after = [i for i in range(1, grid.steps + 1) if grid.sigma[i] > 0]
    if not after:
        return None
    below = [i for i in after if grid.sigma[i] < params.sigma_max_restart]
    if not below:
        raise ParameterError(f"sampler 'restart': sigma_max_restart "
                             f"({params.sigma_max_restart}) is not above any noise level "
                             f"of the grid after its start (smallest "
                             f"{min(grid.sigma[i] for i in after):.4g})")
    return min(below, key=lambda i: abs(grid.sigma[i] - params.sigma_min_restart))


def restart_extra_nfe(params, steps, final_sigma_zero):
    """Evaluations of the restarts, K intervals of `restart_steps` Heun steps, wherever
    the grid has a point with sigma > 0 after its start."""
    has_point = steps >= 2 or not final_sigma_zero
    return 2 * params.restarts * params.restart_steps if has_point else 0


def _karras_sigmas(high, low, steps):
    hi, lo = high ** (1 / RESTART_RHO), low ** (1 / RESTART_RHO)
    return [(hi + j / steps * (lo - hi)) ** RESTART_RHO for j in range(steps + 1)]


def restart(model, x, grid, noise, callback, params):
    """Restart sampling: Heun ODE steps, a restart interval re-entered K times (Xu et al. 2023).

    The interval's noise comes from each sample's own stream. Cost: 2N - 1 evaluations
    for N main steps (2N under VE), plus 2 K `restart_steps` (none for 1 step to 0).
    """
    sde, t, sigma = model.sde, grid.t, grid.sigma
    at = restart_index(grid, params)
    if at is not None:
        if params.sigma_max_restart > float(sde.sigma(sde.T)):
            raise ParameterError(f"sampler 'restart': sigma_max_restart "
                                 f"({params.sigma_max_restart}) exceeds the process's "
                                 f"largest noise level {float(sde.sigma(sde.T)):.4g}")
        t_max = float(sde.t_of_sigma(params.sigma_max_restart))
        levels = _karras_sigmas(params.sigma_max_restart, sigma[at], params.restart_steps)
        times = [t_max] + [float(sde.t_of_sigma(v)) for v in levels[1:-1]] + [t[at]]
        a, b2 = sde.transition(t[at], t_max)
    for i in range(grid.steps):
        x = heun_step(model, x, t[i], t[i + 1], sigma[i + 1])
        if i + 1 == at:
            for _ in range(params.restarts):
                x = float(a) * x + math.sqrt(float(b2)) * noise(x)     # forward jump
                for t_cur, t_next, s_next in zip(times, times[1:], levels[1:]):
                    x = heun_step(model, x, t_cur, t_next, s_next)     # back down
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="restart", fn=restart, params=RestartParams,
        capabilities=Capabilities(stochastic=True, order=0, nfe_per_step=2,
                                  final_step_nfe=1, extra_nfe=restart_extra_nfe),
        citation="Xu et al. 2023, Restart Sampling for Improving Generative Processes, "
                 "Algorithm 1"))
