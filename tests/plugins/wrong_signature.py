"""Broken on purpose: a hook implementation whose argument is not in the hook spec."""

from __future__ import annotations

from harness import hookimpl

harness_api_version = 1


@hookimpl
def harness_register_samplers(registry):  # the spec's argument is `register`
    raise AssertionError("never called: the loader refuses this plugin")
