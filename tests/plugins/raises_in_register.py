"""Broken on purpose: registers one sampler, then raises inside the registration hook."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def half_registered(model, x, grid, noise, callback, params):
    """Never used: the plugin's registrations are discarded because the hook raised."""
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="half_registered", fn=half_registered,
                     capabilities=Capabilities(stochastic=False, order=1),
                     citation="a deliberately broken plugin (tests/plugins)"))
    raise RuntimeError("configuration file not found")
