"""DPM-Solver++(2M): the multistep second-order solver in data-prediction form.

Lu, Zhou, Bao, Chen, Li and Zhu (2022), "DPM-Solver++: Fast Solver for Guided Sampling
of Diffusion Probabilistic Models", Algorithm 2.

The paper writes the forward process as x_t = alpha_t x_0 + sigma_t eps. In the harness's
convention x_t = s(t) (x_0 + sigma(t) eps), so alpha_t = s(t) and the paper's sigma_t is
s(t) sigma(t); the half-log-SNR is lambda_t = log(alpha_t / sigma_t) = -log sigma(t), and
the data prediction x_theta(x_t, t) is the EDM denoiser D(x_t / s(t); sigma(t)). Working
in lambda makes the linear part of the probability-flow ODE exact, so only the denoiser
is extrapolated: once (first order) on the first step, and linearly through the last two
denoised values (second order) on every other step.
"""

from __future__ import annotations

import math

from harness import Capabilities, Sampler


def dpmpp_2m(model, x, grid, noise, callback, params):
    """DPM-Solver++(2M), multistep 2nd order in log-SNR (Lu et al. 2022, Algorithm 2).

    One denoiser evaluation per step (N for N steps): each step reuses the previous
    step's denoised value. The last step, to sigma = 0 (lambda = +inf), is first order
    and returns the denoised estimate itself.
    """
    sigma, scale = grid.sigma, grid.scale
    lam = [-math.log(s) if s > 0 else math.inf for s in sigma]      # lambda_{t_i}
    denoised_prev, h_prev = None, None
    for i in range(grid.steps):
        denoised = model.denoise(x / scale[i], sigma[i])           # x_theta(x_{t_i}, t_i)
        if sigma[i + 1] == 0:
            # lambda -> inf: e^{-h} -> 0 and the update tends to alpha_{t_{i+1}} x_theta.
            x = scale[i + 1] * denoised
        else:
            h = lam[i + 1] - lam[i]
            if denoised_prev is None:                               # first step: order 1
                d = denoised
            else:                                                   # D_i of Algorithm 2
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * denoised_prev
            # x_{t_i} = sigma_{t_i}/sigma_{t_{i-1}} x_{t_{i-1}} - alpha_{t_i}(e^{-h} - 1) D_i,
            # with the paper's sigma_t = s(t) sigma(t).
            ratio = (scale[i + 1] * sigma[i + 1]) / (scale[i] * sigma[i])
            x = ratio * x - scale[i + 1] * math.expm1(-h) * d
            h_prev = h
        denoised_prev = denoised
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": denoised})
    return x


SAMPLER = Sampler(
    name="example_dpmpp_2m", fn=dpmpp_2m,
    # Deterministic, second order, one evaluation per step including the last one.
    # Not `pf_ode`: it talks to the denoiser, not to `model.ode_drift`, and cannot
    # start at sigma = 0 (lambda = +inf), so it cannot run the flow from data to noise.
    capabilities=Capabilities(stochastic=False, order=2, nfe_per_step=1),
    citation="Lu et al. 2022, DPM-Solver++: Fast Solver for Guided Sampling of Diffusion "
             "Probabilistic Models, Algorithm 2")
