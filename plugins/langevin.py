"""Stochastic sampling with Langevin-like churn (Karras et al. 2022, Alg. 2).

Weak order 2: the churn is the forward process's exact transition from sigma_i to
sigma_hat, so it keeps the exact marginal, and the only error is that of the Heun step
from sigma_hat to sigma_{i+1}, of length O(h) while gamma = S_churn / N. The conformance
kit computes the weak error exactly on its Gaussian (the sampler is affine there): a
slope of 1.76 over 16-128 steps at the default S_churn = 10 (gamma is capped at
sqrt(2) - 1 below 25 steps), 2.0 at 256-1024 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, ParameterError, Params, Sampler, hookimpl, param

from .heun import heun_step

harness_api_version = 1


@dataclass(frozen=True)
class ChurnParams(Params):
    S_churn: float = param(10.0, ge=0.0, doc="total churn; gamma_i = min(S_churn/N, "
                                             "sqrt(2) - 1)")
    S_tmin: float = param(0.0, ge=0.0, doc="churn only where sigma_i >= S_tmin")
    S_tmax: float = param(math.inf, ge=0.0, doc="churn only where sigma_i <= S_tmax")
    S_noise: float = param(1.0, ge=0.0, doc="noise inflation; 1 keeps the marginals exact")

    def check(self):
        if self.S_tmin > self.S_tmax:
            raise ParameterError(f"parameter 'S_tmin' ({self.S_tmin}) must not exceed "
                                 f"'S_tmax' ({self.S_tmax})")


def langevin(model, x, grid, noise, callback, params):
    """Karras et al. 2022, Alg. 2: add noise to raise sigma by gamma, then a Heun step.

    Written for a general SDE: the churned point is t_hat = t(sigma_hat), and the state
    is rescaled by s(t_hat)/s(t_i). With S_churn = 0 this is exactly `heun`.
    """
    sde, t, sigma, n = model.sde, grid.t, grid.sigma, grid.steps
    gamma_max = min(params.S_churn / n, math.sqrt(2) - 1)
    for i in range(n):
        gamma = gamma_max if params.S_tmin <= sigma[i] <= params.S_tmax else 0.0
        t_hat, x_hat = t[i], x
        if gamma > 0:                                           # increase noise temporarily
            sigma_hat = sigma[i] * (1 + gamma)
            t_hat = float(sde.t_of_sigma(sigma_hat))
            s_hat = float(sde.scale(t_hat))
            extra = s_hat * math.sqrt(sigma_hat**2 - sigma[i] ** 2) * params.S_noise
            x_hat = (s_hat / grid.scale[i]) * x + extra * noise(x)
        x = heun_step(model, x_hat, t_hat, t[i + 1], sigma[i + 1])   # Heun step from t_hat
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="langevin", fn=langevin, params=ChurnParams,
        capabilities=Capabilities(stochastic=True, order=2, nfe_per_step=2,
                                  final_step_nfe=1),
        citation="Karras et al. 2022, Elucidating the Design Space of Diffusion-Based "
                 "Generative Models, Algorithm 2"))
