"""DDIM (Song, Meng and Ermon 2021): deterministic, and with eta the DDPM-like family.

The paper writes x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. The harness's processes
are x_t = s(t) (x_0 + sigma(t) n), so DDIM's Eq. 12 reads the same in the unscaled
variable u = x / s, whatever s(t): keep the predicted noise eps_hat = (u - D) / sigma,
move the predicted clean sample D = D(u; sigma) to the next noise level, and replace part
of eps_hat by fresh noise of standard deviation

    c = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)          (Eq. 16 in u),

which at eta = 1 is the DDPM posterior q(u_next | u, x_0), and at eta = 0 nothing.
Two samplers share the step: `ddim` (eta = 0; deterministic, the first-order
DPM-Solver++(1)) and `ddim_eta` (eta a parameter, default 1: the DDPM posterior).
They are registered apart because a sampler's capabilities are data that cannot depend
on its parameters: with eta > 0 the output is no function of x_T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, NoParams, Params, Sampler, hookimpl, param

harness_api_version = 1

CITATION = ("Song, Meng and Ermon 2021, Denoising Diffusion Implicit Models, Eq. 12 "
            "and Eq. 16")


@dataclass(frozen=True)
class DDIMParams(Params):
    eta: float = param(1.0, ge=0.0, le=1.0, doc="fresh-noise share: 0 is deterministic "
                                                "DDIM, 1 the DDPM posterior variance")


def ddim_eta(model, x, grid, noise, callback, params):
    """DDIM with eta (Song et al. 2021, Eq. 12); eta = 1 is the DDPM posterior.

    One evaluation per step. The step to sigma = 0 returns the predicted clean sample;
    under VE the grid ends at sigma_min > 0 and the last step is an ordinary one.
    """
    sigma, scale = grid.sigma, grid.scale
    for i in range(grid.steps):
        u = x / scale[i]
        denoised = model.denoise(u, sigma[i])                       # predicted x_0
        eps = (u - denoised) / sigma[i]                             # predicted noise
        ratio, eta = sigma[i + 1] / sigma[i], params.eta
        c = eta * sigma[i + 1] * math.sqrt(1 - ratio**2)            # sigma_t(eta) of Eq. 16
        # sqrt(sigma_next^2 - c^2), written without the cancellation of that difference.
        kept = sigma[i + 1] * math.sqrt(1 - eta**2 + (eta * ratio) ** 2)
        u = denoised + kept * eps                                   # direction to x_t
        if c > 0:
            u = u + c * noise(x)                                    # random noise
        x = scale[i + 1] * u
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": denoised})
    return x


def ddim(model, x, grid, noise, callback, params):
    """Deterministic DDIM, eta = 0 (Song et al. 2021, Eq. 12); one evaluation per step."""
    return ddim_eta(model, x, grid, noise, callback, DDIMParams(eta=0.0))


@hookimpl
def harness_register_samplers(register):
    # Not `pf_ode`: both talk to the denoiser, not to `model.ode_drift`.
    register(Sampler(
        name="ddim", fn=ddim, params=NoParams,
        capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1),
        citation=CITATION + " (eta = 0)"))
    register(Sampler(
        name="ddim_eta", fn=ddim_eta, params=DDIMParams,
        capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
        citation=CITATION))
