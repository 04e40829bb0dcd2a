"""Broken on purpose: Heun that corrects on the last step too but declares 2N - 1 NFE."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def heun_always_corrects(model, x, grid, noise, callback, params):
    """Heun's method on the PF-ODE with the correction on every step: 2N evaluations."""
    t = grid.t
    for i in range(grid.steps):
        d_cur = model.ode_drift(x, t[i])
        x_next = x + (t[i + 1] - t[i]) * d_cur
        d_prime = model.ode_drift(x_next, t[i + 1])        # also on the step to t = 0
        x = x + (t[i + 1] - t[i]) * 0.5 * (d_cur + d_prime)
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    # The bug: final_step_nfe=1 copied from `heun`, whose last step is Euler.
    register(Sampler(name="wrong_nfe", fn=heun_always_corrects,
                     capabilities=Capabilities(stochastic=False, order=2, nfe_per_step=2,
                                               final_step_nfe=1, pf_ode=True),
                     citation="a deliberately broken sampler (tests/plugins)"))
