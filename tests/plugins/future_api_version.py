"""Broken on purpose: written for a harness API version this harness does not provide."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 2


def euler_v2(model, x, grid, noise, callback, params):
    """Would be fine, but the plugin states it needs API version 2."""
    for i in range(grid.steps):
        x = x + (grid.t[i + 1] - grid.t[i]) * model.ode_drift(x, grid.t[i])
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="euler_v2", fn=euler_v2,
                     capabilities=Capabilities(stochastic=False, order=1),
                     citation="a deliberately broken plugin (tests/plugins)"))
