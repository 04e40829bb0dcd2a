"""Samplers for the fault-injection tests, loaded by the real CLI in a subprocess through
an entry point (`tests.fault_support.install_distribution`):

* `exits`: calls sys.exit(0) inside its trial, as a careless plugin might;
* `float64_euler`: Euler whose state leaves the run's dtype (float64 in a float32 run);
* `slow_euler`: Euler after sleeping $HARNESS_TEST_SLEEP seconds, so that a test can
  act (kill, interrupt, stop the server) while a suite is mid-way.
"""

from __future__ import annotations

import os
import sys
import time

from harness_plugins.euler import euler

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1
SLEEP_ENV = "HARNESS_TEST_SLEEP"


def exits(model, x, grid, noise, callback, params):
    """Euler, then sys.exit(0): the plugin tries to end the whole process."""
    euler(model, x, grid, noise, callback, params)
    sys.exit(0)


def float64_euler(model, x, grid, noise, callback, params):
    """Euler in float64 whatever the run's dtype."""
    return euler(model, x.double(), grid, noise, callback, params)


def slow_euler(model, x, grid, noise, callback, params):
    """Euler after a pause of $HARNESS_TEST_SLEEP seconds (default 0)."""
    time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
    return euler(model, x, grid, noise, callback, params)


@hookimpl
def harness_register_samplers(register):
    for fn in (exits, float64_euler, slow_euler):
        register(Sampler(name=fn.__name__, fn=fn,
                         capabilities=Capabilities(stochastic=False, order=1),
                         citation="a fault-injection test sampler (tests/plugins)"))
