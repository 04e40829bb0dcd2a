"""Broken on purpose: evaluates the model (so its NFE is honest) but ignores the result."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def ignores_score(model, x, grid, noise, callback, params):
    """Returns x_T rescaled to unit variance: the score it computes is never used."""
    for i in range(grid.steps):
        model.denoise(x / grid.scale[i], grid.sigma[i])   # the bug: result dropped
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x})
    return x / model.sde.prior_std


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="ignores_score", fn=ignores_score,
                     capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1),
                     citation="a deliberately broken sampler (tests/plugins)"))
