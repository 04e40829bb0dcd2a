"""DPM-Solver++(2M) and (3M): multistep exponential integrators in data prediction.

Lu, Zhou, Bao, Chen, Li and Zhu (2022), "DPM-Solver++: Fast Solver for Guided Sampling
of Diffusion Probabilistic Models", Algorithm 2 (2M) and the authors' reference code
(3M, `multistep_dpm_solver_third_update`).

The paper writes x_t = alpha_t x_0 + sigma_t eps; in the harness's x_t = s(t) (x_0 +
sigma(t) n), alpha_t = s(t) and the paper's sigma_t is s(t) sigma(t), so that in the
unscaled variable u = x / s the half-log-SNR is lambda = -log sigma and the data
prediction is the denoiser D(u; sigma). In lambda the linear part of the probability-
flow ODE is integrated exactly,

    u_{i+1} = (sigma_{i+1} / sigma_i) u_i + int_{lambda_i}^{lambda_{i+1}} e^{lambda - lambda_{i+1}}
              D(lambda) d lambda,

and only D is extrapolated, through the last one, two or three denoised values (orders
1, 2, 3): one evaluation per step. With h = lambda_{i+1} - lambda_i, r0 = h_{i-1} / h,
r1 = h_{i-2} / h and the differences D1_0 = (D_i - D_{i-1}) / r0, D1_1 = (D_{i-1} -
D_{i-2}) / r1:

    order 1:  u_{i+1} = (sigma_{i+1} / sigma_i) u_i - phi_1 D_i,          phi_1 = e^{-h} - 1,
    order 2:  ... - phi_1 D1_0 / 2   ('midpoint', the paper's)
              ... + phi_2 D1_0       ('heun', the Taylor form),          phi_2 = phi_1 / h + 1,
    order 3:  ... + phi_2 D1 - phi_3 D2,  D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
              D2 = 2 (D1_0 - D1_1) / (r0 + r1),                         phi_3 = phi_2 / h - 1/2.

D1 and D2 estimate h D' and h^2 D'' (derivatives in lambda), and the D'' term of the
integral is -phi_3 h^2 D''. The authors' code, diffusers' scheduler and k-diffusion's
`sample_dpmpp_3m_sde` (eta = 0) use D2 without the factor 2, h^2 D'' / 2: their 3M has a
local error O(h^3) and converges with order 2 as steps shrink (PF-ODE error on the 64-D
oracle, 32 to 1024 steps, halving slopes 2.42, 2.37, 2.23, 2.12, 2.06; with the factor:
2.85, 2.99, 3.02, 3.01, 2.99). `second_difference="full"` (the default) is the Taylor
term; "half" reproduces those implementations.

Warm-up: step i uses at most i + 1 values. The final steps (`lower_order_final`, on by
default as in the authors' code): with fewer than 10 steps, step i of N uses at most
N - i values (diffusers' scheduler applies the same rule below 15 steps). Whatever the
order, the step that lands on sigma = 0 (lambda = +inf, every r = 0) can only be the
first-order one, whose limit is the denoised estimate itself: u_N = D_{N-1}. Under VE the
grid ends at sigma_min > 0 and the last step is an ordinary one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1

#: Runs with fewer steps than this lower the order of their last steps when
#: `lower_order_final` is set (the DPM-Solver authors' code; diffusers uses 15).
LOWER_ORDER_FINAL_BELOW = 10

CITATION = ("Lu et al. 2022, DPM-Solver++: Fast Solver for Guided Sampling of Diffusion "
            "Probabilistic Models")


@dataclass(frozen=True)
class MultistepParams(Params):
    lower_order_final: bool = param(True, doc=f"with fewer than {LOWER_ORDER_FINAL_BELOW} "
                                              f"steps, lower the order of the last steps "
                                              f"to the number of steps left")
    solver_type: str = param("midpoint", choices=("midpoint", "heun"),
                             doc="second-order steps: 'midpoint' (the paper's D_i) or "
                                 "'heun' (exact integral of the linear extrapolation)")


@dataclass(frozen=True)
class ThirdOrderParams(MultistepParams):
    second_difference: str = param(
        "full", choices=("full", "half"),
        doc="D2 of the third-order step: 'full' is h^2 D'' (3rd order); 'half' is the "
            "authors' code, diffusers and k-diffusion, which keep half of it (2nd order)")


def step_order(i: int, steps: int, order: int, lower_order_final: bool) -> int:
    """The order of step i of `steps`: lower while warming up and, when asked, at the end."""
    k = min(order, i + 1)
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        k = min(k, steps - i)
    return k


def dpmpp_multistep(model, x, grid, callback, order, lower_order_final, solver_type,
                    d2_weight=2.0):
    """DPM-Solver++ of `order` (2 or 3), multistep in lambda = -log sigma, 1 NFE a step.

    `d2_weight` multiplies (D1_0 - D1_1) / (r0 + r1) into D2: 2 is the Taylor term, 1 the
    libraries' (see the module docstring)."""
    sigma, scale, n = grid.sigma, grid.scale, grid.steps
    lam = [-math.log(v) if v > 0 else math.inf for v in sigma]
    past = []                                                       # D_{i-1}, D_{i-2}
    for i in range(n):
        u = x / scale[i]
        d0 = model.denoise(u, sigma[i])                             # D_i = x_theta(x_i, t_i)
        if sigma[i + 1] == 0:
            u = d0                                                  # limit h -> inf, order 1
        else:
            h = lam[i + 1] - lam[i]
            phi_1 = math.expm1(-h)
            phi_2 = phi_1 / h + 1
            phi_3 = phi_2 / h - 0.5
            u = (sigma[i + 1] / sigma[i]) * u - phi_1 * d0          # DPM-Solver++(1)
            k = step_order(i, n, order, lower_order_final)
            if k >= 2:
                r0 = (lam[i] - lam[i - 1]) / h
                d1_0 = (d0 - past[0]) / r0
            if k == 2:
                u = u + (-0.5 * phi_1 if solver_type == "midpoint" else phi_2) * d1_0
            if k == 3:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d1_1 = (past[0] - past[1]) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = d2_weight * (d1_0 - d1_1) / (r0 + r1)
                u = u + phi_2 * d1 - phi_3 * d2
        x = scale[i + 1] * u
        past = [d0, *past][: order - 1]
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": d0})
    return x


def dpmpp_2m(model, x, grid, noise, callback, params):
    """DPM-Solver++(2M): multistep 2nd order in log-SNR (Lu et al. 2022, Algorithm 2)."""
    return dpmpp_multistep(model, x, grid, callback, 2, params.lower_order_final,
                           params.solver_type)


def dpmpp_3m(model, x, grid, noise, callback, params):
    """DPM-Solver++(3M): multistep 3rd order in log-SNR (Lu et al. 2022, authors' code)."""
    d2_weight = 2.0 if params.second_difference == "full" else 1.0
    return dpmpp_multistep(model, x, grid, callback, 3, params.lower_order_final,
                           params.solver_type, d2_weight)


@hookimpl
def harness_register_samplers(register):
    # One evaluation per step, the last one included. Not `pf_ode`: they talk to the
    # denoiser, not to `model.ode_drift`, and cannot start at sigma = 0 (lambda = +inf).
    register(Sampler(
        name="dpmpp_2m", fn=dpmpp_2m, params=MultistepParams,
        capabilities=Capabilities(stochastic=False, order=2, nfe_per_step=1),
        citation=CITATION + ", Algorithm 2"))
    register(Sampler(
        name="dpmpp_3m", fn=dpmpp_3m, params=ThirdOrderParams,
        capabilities=Capabilities(stochastic=False, order=3, nfe_per_step=1),
        citation=CITATION + ", multistep third order (authors' code)"))
