"""harness-dpmsolver: DPM-Solver++(2M) and deterministic DDIM as a harness plugin.

The harness finds this module through the ``harness`` entry-point group declared in
this distribution's ``pyproject.toml``; it calls the hook below once when it loads
its plugins.
"""

from __future__ import annotations

from harness import hookimpl

from .ddim import SAMPLER as DDIM
from .dpmpp_2m import SAMPLER as DPMPP_2M

__version__ = "0.1.0"

#: The harness hook API this plugin is written for; another major version refuses it.
harness_api_version = 1


@hookimpl
def harness_register_samplers(register):
    register(DPMPP_2M)
    register(DDIM)
