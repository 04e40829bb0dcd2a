"""The exact probability-flow ODE solution for Gaussian data, and a fitted order.

For data N(MU, S0^2 I) (`gaussian_closed_form`) every process's PF-ODE moves the unscaled
u = x / alpha(t) along du / d sigma = (u - D(u; sigma)) / sigma = sigma (u - MU) /
(S0^2 + sigma^2) (Karras et al. 2022, Eq. 3 with the Gaussian's denoiser), whose solution
is u(sigma) - MU = (u(sigma_0) - MU) sqrt((S0^2 + sigma^2) / (S0^2 + sigma_0^2)). Written
with the closed forms of `gaussian_closed_form`, not the harness's SDE helpers.
"""

from __future__ import annotations

import math

import numpy as np

from . import gaussian_closed_form as cf


def noise_level(name, t):
    """sigma(t) of the unscaled variable: the kernel's std over its mean coefficient."""
    return math.sqrt(cf.kernel_variance(name, t)) / cf.alpha(name, t)


def exact_flow(name, x, t_from, t_to):
    """The PF-ODE solution at t_to from the state x at t_from."""
    mu = cf.mu(x.dtype)
    u = x / cf.alpha(name, t_from)
    ratio = math.sqrt((cf.S0**2 + noise_level(name, t_to) ** 2)
                      / (cf.S0**2 + noise_level(name, t_from) ** 2))
    return cf.alpha(name, t_to) * (mu + (u - mu) * ratio)


def fitted_order(steps, errors):
    """Minus the least-squares slope of log error on log step count."""
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])
