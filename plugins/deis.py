"""DEIS-tAB: the diffusion exponential integrator with Adams-Bashforth extrapolation.

Zhang and Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator":
tAB-DEIS, with rhoAB-DEIS as its variant in the variable rho.

In the harness's x = s(t) (x_0 + sigma(t) n) the paper's rho is sigma(t) and its
exponential-integrator change of variable is u = x / s. The probability-flow ODE then
reads du / d rho = eps(u, rho), with eps = (u - D(u; rho)) / rho the noise prediction,
so a step integrates eps exactly once it is replaced by the polynomial through the last
k values (Adams-Bashforth):

    u_{i+1} = u_i + sum_j C_ij eps_{i-j},  C_ij = int_{rho_i}^{rho_{i+1}} l_j(v(rho)) d rho,

with l_j the Lagrange basis polynomial of node j in the interpolation variable v:

    'variable = t'       v = t(rho): the paper's tAB-DEIS (in this process's own time t);
    'variable = rho'     v = rho: rhoAB-DEIS (= AB with variable steps in sigma);
    'variable = log_rho' v = log rho: diffusers' `DEISMultistepScheduler` ('logrho').

The coefficients are integrals of smooth functions of rho over one step (log rho has an
integrable singularity where a step lands on rho = 0): they are computed by adaptive
Gauss-Kronrod quadrature (QUADPACK's QAGS, `scipy.integrate.quad`) to a relative 1e-12,
as the paper computes them numerically. With k = 1 every variable gives DDIM.

Warm-up: step i uses at most i + 1 values. The paper has no lower-order final steps; with
`lower_order_final` (diffusers' default), runs of fewer than 15 steps lower step i of N to
at most N - i values. The step to sigma = 0 is an ordinary one: the polynomial is
integrated down to rho = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1

#: Runs with fewer steps than this lower the order of their last steps when
#: `lower_order_final` is set (diffusers' `DEISMultistepScheduler`).
LOWER_ORDER_FINAL_BELOW = 15
#: Relative accuracy of the quadrature of each coefficient.
QUADRATURE_RTOL = 1e-12


@dataclass(frozen=True)
class DEISParams(Params):
    order: int = param(3, ge=1, le=3, doc="number of eps values the polynomial goes through")
    variable: str = param("t", choices=("t", "rho", "log_rho"),
                          doc="interpolation variable: the process's time t (tAB), "
                              "rho = sigma (rhoAB) or log rho (diffusers)")
    lower_order_final: bool = param(False, doc=f"with fewer than {LOWER_ORDER_FINAL_BELOW} "
                                               f"steps, step i of N uses at most N - i "
                                               f"values")


def _coordinate(sde, variable):
    """v(rho): where the Lagrange polynomial is built, as a function of rho = sigma."""
    if variable == "t":
        return lambda rho: float(sde.t_of_sigma(rho))
    if variable == "log_rho":
        return math.log
    return lambda rho: rho


def coefficients(nodes, rho_from, rho_to, v):
    """C_j = int_{rho_from}^{rho_to} l_j(v(rho)) d rho for the Lagrange basis on `nodes`."""
    def basis(j):
        others = [n for m, n in enumerate(nodes) if m != j]
        return lambda rho: math.prod((v(rho) - n) / (nodes[j] - n) for n in others)

    if len(nodes) == 1:
        return [rho_to - rho_from]
    # Imported here: scipy.integrate takes a third of a second, and loading the plugins
    # (e.g. for `harness plugins`) should not pay it.
    from scipy.integrate import quad

    tol = QUADRATURE_RTOL * abs(rho_to - rho_from)
    return [quad(basis(j), rho_from, rho_to, epsabs=tol, epsrel=QUADRATURE_RTOL,
                 limit=200)[0] for j in range(len(nodes))]


def step_order(i: int, steps: int, order: int, lower_order_final: bool) -> int:
    """The order of step i of `steps`: lower while warming up and, when asked, at the end."""
    k = min(order, i + 1)
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        k = min(k, steps - i)
    return k


def deis(model, x, grid, noise, callback, params):
    """DEIS-tAB: exponential integrator, eps extrapolated in t (Zhang & Chen 2023).

    One evaluation per step (N for N steps); orders 1-3 (`order`), interpolation in t,
    rho or log rho (`variable`).
    """
    sigma, scale, n = grid.sigma, grid.scale, grid.steps
    v = _coordinate(model.sde, params.variable)
    past = []                                            # (v_j, eps_j), newest first
    for i in range(n):
        u = x / scale[i]
        eps = (u - model.denoise(u, sigma[i])) / sigma[i]
        past = [(v(sigma[i]), eps)] + past[: params.order - 1]
        k = step_order(i, n, params.order, params.lower_order_final)
        nodes = [node for node, _ in past[:k]]
        for c, (_, e) in zip(coefficients(nodes, sigma[i], sigma[i + 1], v), past):
            u = u + c * e
        x = scale[i + 1] * u
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    # Not `pf_ode`: it talks to the denoiser and cannot start at sigma = 0.
    register(Sampler(
        name="deis", fn=deis, params=DEISParams,
        capabilities=Capabilities(stochastic=False, order=3, nfe_per_step=1),
        citation="Zhang & Chen 2023, Fast Sampling of Diffusion Models with Exponential "
                 "Integrator, tAB-DEIS"))
