"""Broken on purpose: says it returns the denoised mean but its last step adds noise."""

from __future__ import annotations

import math

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def noisy_last_step_em(model, x, grid, noise, callback, params):
    """Reverse-SDE Euler-Maruyama; the last step is meant to return the denoised mean."""
    sde, t = model.sde, grid.t
    for i in range(grid.steps):
        dt = t[i + 1] - t[i]
        x = x + sde.reverse_drift(x, t[i], model.score(x, t[i])) * dt
        # The bug: no `if i < grid.steps - 1`, so the step to sigma = 0 adds noise too.
        x = x + sde.diffusion(t[i]) * math.sqrt(-dt) * noise(x)
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="final_step_noise", fn=noisy_last_step_em,
                     capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
                     citation="a deliberately broken sampler (tests/plugins)"))
