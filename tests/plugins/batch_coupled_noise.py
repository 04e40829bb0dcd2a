"""Broken on purpose: Euler-Maruyama whose noise is centred across the batch."""

from __future__ import annotations

import math

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def batch_centred_em(model, x, grid, noise, callback, params):
    """Reverse-SDE Euler-Maruyama with the noise's batch mean removed at every step."""
    sde, t = model.sde, grid.t
    for i in range(grid.steps):
        dt = t[i + 1] - t[i]
        x = x + sde.reverse_drift(x, t[i], model.score(x, t[i])) * dt
        if i < grid.steps - 1:
            z = noise(x)
            z = z - z.mean(0, keepdim=True)   # the bug: couples every sample to the batch
            x = x + sde.diffusion(t[i]) * math.sqrt(-dt) * z
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="batch_coupled_noise", fn=batch_centred_em,
                     capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
                     citation="a deliberately broken sampler (tests/plugins)"))
