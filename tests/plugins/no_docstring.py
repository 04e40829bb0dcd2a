"""Incomplete on purpose: a correct Euler sampler whose function has no docstring, so
`harness plugins` has no summary to show; the kit must warn and still judge it."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def euler_undocumented(model, x, grid, noise, callback, params):
    t = grid.t
    for i in range(grid.steps):
        x = x + (t[i + 1] - t[i]) * model.ode_drift(x, t[i])
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="no_docstring", fn=euler_undocumented,
                     capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1,
                                               pf_ode=True),
                     citation="an incomplete sampler (tests/plugins)"))
