"""DPM-Solver++(2M) SDE: the 2M multistep update on the family of reverse SDEs.

The SDE variant of Lu et al. (2022, DPM-Solver++: SDE-DPM-Solver++(2M)), with the noise
share eta of k-diffusion's `sample_dpmpp_2m_sde` (Crowson 2022). In the unscaled
variable u = x / s(t), lambda = -log sigma, the family of reverse SDEs with extra noise
eta has the linear drift (1 + eta)(D - u) in lambda; integrating it exactly over a step
of length h, with H = (1 + eta) h, gives

    u_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} u_i + (1 - e^{-H}) D_i + c D1_0
              + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z,

D1_0 = (D_i - D_{i-1}) / r0 the multistep difference (r0 = h_{i-1} / h), and c the weight
of the linear extrapolation of D: 'midpoint' c = (1 - e^{-H}) / 2 (the paper's), 'heun'
c = 1 - (1 - e^{-H}) / H (its exact integral). eta = 0 is `dpmpp_2m`; eta = 1 the
paper's SDE solver. The first step is first order (c = 0), `lower_order_final` as in
`dpmpp_2m`, and the step that lands on sigma = 0 returns the denoised estimate without
noise: the last network evaluation leaves none in the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Sampler, hookimpl, param

from .dpm_solver_pp import CITATION, MultistepParams, step_order

harness_api_version = 1


@dataclass(frozen=True)
class SDEParams(MultistepParams):
    eta: float = param(1.0, ge=0.0, doc="extra noise: 0 is the ODE solver dpmpp_2m, 1 the "
                                        "reverse SDE")
    s_noise: float = param(1.0, ge=0.0, doc="noise inflation; 1 keeps the marginals exact")


def dpmpp_2m_sde(model, x, grid, noise, callback, params):
    """DPM-Solver++(2M) SDE with noise share eta (Lu et al. 2022; k-diffusion form).

    One evaluation per step; fresh noise on every step that does not land on sigma = 0.
    """
    sigma, scale, n, eta = grid.sigma, grid.scale, grid.steps, params.eta
    lam = [-math.log(v) if v > 0 else math.inf for v in sigma]
    d_prev = None                                                   # D_{i-1}
    for i in range(n):
        u = x / scale[i]
        d0 = model.denoise(u, sigma[i])                             # D_i
        if sigma[i + 1] == 0:
            u = d0                                                  # limit h -> inf
        else:
            h = lam[i + 1] - lam[i]
            big_h = (1 + eta) * h
            decay = -math.expm1(-big_h)                             # 1 - e^{-H}
            u = (sigma[i + 1] / sigma[i]) * math.exp(-eta * h) * u + decay * d0
            if step_order(i, n, 2, params.lower_order_final) == 2:
                d1_0 = (d0 - d_prev) / ((lam[i] - lam[i - 1]) / h)
                c = 0.5 * decay if params.solver_type == "midpoint" else 1 - decay / big_h
                u = u + c * d1_0
            if eta > 0:
                spread = sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta * h))
                u = u + params.s_noise * spread * noise(x)
        x = scale[i + 1] * u
        d_prev = d0
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": d0})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="dpmpp_2m_sde", fn=dpmpp_2m_sde, params=SDEParams,
        # Weak order 1: the noise enters the multistep difference D_i - D_{i-1}, which
        # is then no O(h) estimate of dD/dlambda. (On a Gaussian, whose denoiser is
        # linear, the exact weak error falls like h^2: tests/test_dpm_solver_pp_sde.py.)
        capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
        citation=CITATION + ", SDE-DPM-Solver++(2M); k-diffusion `sample_dpmpp_2m_sde` "
                            "(eta)"))
