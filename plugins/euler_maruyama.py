"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1


@dataclass(frozen=True)
class EulerMaruyamaParams(Params):
    keep_final_noise: bool = param(False, doc="add noise on the last step too, instead "
                                              "of returning the step's mean")


def euler_maruyama(model, x, grid, noise, callback, params):
    """Euler-Maruyama on the reverse SDE dx = [f - g^2 score] dt + g dw (Song et al. 2021).

    Steps use the grid's own spacing; the last step returns the transition mean
    (the "denoised" output of the reference) unless `keep_final_noise` is set.
    """
    sde, t = model.sde, grid.t
    for i in range(grid.steps):
        dt = t[i + 1] - t[i]                                     # negative: reverse time
        x_mean = x + sde.reverse_drift(x, t[i], model.score(x, t[i])) * dt
        last = i == grid.steps - 1
        if last and not params.keep_final_noise:
            x = x_mean
        else:
            x = x_mean + sde.diffusion(t[i]) * math.sqrt(-dt) * noise(x)
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x, "x_mean": x_mean})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="euler_maruyama", fn=euler_maruyama, params=EulerMaruyamaParams,
        capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
        citation="Song et al. 2021, Score-Based Generative Modeling through SDEs"))
