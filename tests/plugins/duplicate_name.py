"""Broken on purpose: registers a sampler under a name a built-in plugin already uses."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def another_euler(model, x, grid, noise, callback, params):
    """Euler's method again, under the built-in's name."""
    for i in range(grid.steps):
        x = x + (grid.t[i + 1] - grid.t[i]) * model.ode_drift(x, grid.t[i])
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="euler", fn=another_euler,
                     capabilities=Capabilities(stochastic=False, order=1, pf_ode=True),
                     citation="a deliberately broken plugin (tests/plugins)"))
