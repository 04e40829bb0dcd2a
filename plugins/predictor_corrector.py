"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-5).

Declared order 0: a fixed bias. The Langevin corrector's step is set by a fixed
signal-to-noise ratio, not by the grid, so each of its N steps moves the law by the same
amount whatever N is, and its error does not vanish as steps are added: on the
conformance kit's Gaussian its weak error grows, 0.12 at 16 steps to 0.36 at 128 (Monte
Carlo: the per-sample step size makes the sampler non-affine there). With
corrector="none" it is its predictor, of weak order 1; the declaration describes the
defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1


@dataclass(frozen=True)
class PCParams(Params):
    predictor: str = param("reverse_diffusion", choices=("reverse_diffusion",
                                                         "euler_maruyama"))
    corrector: str = param("langevin", choices=("langevin", "none"))
    snr: float = param(0.16, ge=0.0, doc="signal-to-noise ratio of the Langevin corrector")
    n_corrector_steps: int = param(1, ge=0, doc="corrector steps per predictor step")


def _corrector_nfe(params):
    return params.n_corrector_steps if params.corrector == "langevin" else 0


def _per_sample_norm(v):
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def predictor_corrector(model, x, grid, noise, callback, params):
    """Predictor-corrector sampler with a Langevin corrector (Song et al. 2021, Alg. 1).

    At each t_i: `n_corrector_steps` Langevin steps whose step size comes from each
    sample's own score and noise norms (not batch means, so a sample does not depend on
    its batch), then one predictor step to t_{i+1}; the last predictor step returns its
    mean. The corrector's alpha_i = s(t_i)^2 / s(t_{i+1})^2 is the continuous-time form
    of the reference's 1 - beta_i (1 for VE and EDM).
    """
    sde, t, scale = model.sde, grid.t, grid.scale
    corrector_steps = _corrector_nfe(params)
    for i in range(grid.steps):
        alpha = (scale[i] / scale[i + 1]) ** 2
        for _ in range(corrector_steps):                          # Langevin corrector
            grad = model.score(x, t[i])
            z = noise(x)
            step = 2 * alpha * (params.snr * _per_sample_norm(z)
                                / _per_sample_norm(grad).clamp_min(1e-30)) ** 2
            x = x + step * grad + (2 * step).sqrt() * z
        score = model.score(x, t[i])                              # predictor
        if params.predictor == "reverse_diffusion":
            a, b2 = sde.transition(t[i + 1], t[i])
            x_mean = x - (a - 1) * x + b2 * score
            std = math.sqrt(b2)
        else:
            dt = t[i + 1] - t[i]
            x_mean = x + sde.reverse_drift(x, t[i], score) * dt
            std = sde.diffusion(t[i]) * math.sqrt(-dt)
        x = x_mean if i == grid.steps - 1 else x_mean + std * noise(x)
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x, "x_mean": x_mean})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="predictor_corrector", fn=predictor_corrector, params=PCParams,
        capabilities=Capabilities(stochastic=True, order=0,
                                  nfe_per_step=lambda p: 1 + _corrector_nfe(p)),
        citation="Song et al. 2021, Score-Based Generative Modeling through SDEs, "
                 "Algorithms 2-5"))
