"""Deterministic DDIM (eta = 0): the first-order member of the same family.

Song, Meng and Ermon (2021), "Denoising Diffusion Implicit Models", Eq. 12 with
sigma_t = 0. In the harness's convention (x_t = s(t) (x_0 + sigma(t) eps)) the update
keeps the predicted noise and moves the predicted clean sample to the next noise level:

    x_{t_{i+1}} / s_{i+1} = D_i + sigma_{i+1} (x_{t_i} / s_i - D_i) / sigma_i.

This is Euler's method on the probability-flow ODE in the variables (x / s, sigma)
(Karras et al. 2022, Sec. 4) and DPM-Solver++(1) (Lu et al. 2022, Eq. 9): the
second-order `example_dpmpp_2m` reduces to it when it drops its multistep correction.
"""

from __future__ import annotations

from harness import Capabilities, Sampler


def ddim(model, x, grid, noise, callback, params):
    """Deterministic DDIM, eta = 0 (Song et al. 2021, Eq. 12); one evaluation per step."""
    sigma, scale = grid.sigma, grid.scale
    for i in range(grid.steps):
        denoised = model.denoise(x / scale[i], sigma[i])            # predicted x_0
        eps = (x / scale[i] - denoised) / sigma[i]                  # predicted noise
        x = scale[i + 1] * (denoised + sigma[i + 1] * eps)          # re-noise to t_{i+1}
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "denoised": denoised})
    return x


SAMPLER = Sampler(
    name="example_ddim", fn=ddim,
    capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1),
    citation="Song, Meng and Ermon 2021, Denoising Diffusion Implicit Models, Eq. 12 "
             "(eta = 0)")
