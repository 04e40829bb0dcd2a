"""A sampler that spends more network evaluations than it declares (Euler with one extra,
uncounted-by-declaration evaluation per run), for the runner's NFE check."""

from __future__ import annotations

from harness_plugins.euler import euler

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def euler_plus_one(model, x, grid, noise, callback, params):
    """Euler, after one wasted evaluation at the first time of the grid."""
    model.ode_drift(x, grid.t[0])
    return euler(model, x, grid, noise, callback, params)


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="underdeclared_euler", fn=euler_plus_one,
                     capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1)))
