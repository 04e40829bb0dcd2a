"""Euler's method on the probability-flow ODE: the first-order baseline everyone reports."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def euler(model, x, grid, noise, callback, params):
    """Euler's method on the probability-flow ODE (Song et al. 2021, Eq. 13)."""
    t = grid.t
    for i in range(grid.steps):
        x = x + (t[i + 1] - t[i]) * model.ode_drift(x, t[i])
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="euler", fn=euler,
        capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1, pf_ode=True),
        citation="Song et al. 2021, Score-Based Generative Modeling through SDEs"))
