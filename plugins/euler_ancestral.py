"""Euler-ancestral: an Euler step down to sigma_down, then fresh noise up to sigma_next.

The ancestral sampler of k-diffusion (Crowson 2022, `sample_euler_ancestral`), in the
variables of Karras et al. (2022): u = x / s(t) and the noise level sigma. The step from
sigma to sigma_next splits the target level into a deterministic part and a noise part,

    sigma_up = eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2),
    sigma_down = sqrt(sigma_next^2 - sigma_up^2),

so that sigma_down^2 + sigma_up^2 = sigma_next^2: Euler's method on the probability-flow
ODE du/dsigma = (u - D) / sigma takes u to sigma_down, and N(0, sigma_up^2) noise brings
it to sigma_next. At eta = 1 sigma_up is the standard deviation of the DDPM posterior,
and the whole step equals DDIM's with the same eta (`ddim_eta`): the Euler step to
sigma_down is D + sigma_down (u - D) / sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1


@dataclass(frozen=True)
class AncestralParams(Params):
    eta: float = param(1.0, ge=0.0, le=1.0, doc="share of the step taken as fresh noise: "
                                                "0 is the Euler ODE step, 1 the DDPM "
                                                "posterior")
    s_noise: float = param(1.0, ge=0.0, doc="noise inflation; 1 keeps the marginals exact")


def euler_ancestral(model, x, grid, noise, callback, params):
    """Euler-ancestral: Euler to sigma_down, then noise sigma_up (k-diffusion, with eta).

    One evaluation per step. No noise is added on a step that lands on sigma = 0, which
    therefore returns the denoised estimate.
    """
    sigma, scale = grid.sigma, grid.scale
    for i in range(grid.steps):
        u = x / scale[i]
        denoised = model.denoise(u, sigma[i])
        sigma_up = params.eta * sigma[i + 1] * math.sqrt(1 - (sigma[i + 1] / sigma[i]) ** 2)
        # max: rounding must not take the square root below zero when sigma_next << sigma.
        sigma_down = math.sqrt(max(sigma[i + 1] ** 2 - sigma_up**2, 0.0))
        d = (u - denoised) / sigma[i]                               # du/dsigma at sigma_i
        u = u + (sigma_down - sigma[i]) * d                         # Euler step
        if sigma_up > 0:
            u = u + params.s_noise * sigma_up * noise(x)            # ancestral noise
        x = scale[i + 1] * u
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": denoised})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="euler_ancestral", fn=euler_ancestral, params=AncestralParams,
        capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
        citation="Crowson 2022, k-diffusion `sample_euler_ancestral` (ancestral step "
                 "with eta), on Karras et al. 2022's Euler step"))
