"""The conformance kit over every k-diffusion sampler, its verdicts pinned: a sampler
whose result changes (a new failure, or a failure gone) fails here.

A failed check holds back the kit's order and convergence checks; for the samplers
that fail one, the kit runs again without it, and those must then pass. The
convergence check runs on 1000 samples instead of the default 2000 (its verdicts stand
with margin: the largest sliced-W2 excess over its floor is 24 %, the limit 50 %).
"""

from __future__ import annotations

import pytest

from harness.plugin.manager import get_plugins
from harness.testing import CHECKS, check_sampler

ADAPTED = [name for name in get_plugins().samplers.names()
           if name.startswith("kdiffusion:")]
SAMPLES = 1000

GLOBAL_NOISE = ("its churn is drawn from torch's global generator, which k-diffusion "
                "offers no way to replace: a sample's noise depends on its batch")
OWN_STEPS = ("it steps on a grid of its own (floor(n / 3) + 1 steps between the grid's "
             "end points) and reports those steps, not the grid's")

#: Sampler -> {check it fails at its defaults: why}; the others pass every check.
FAILS = {
    "euler_churn": {"batch": GLOBAL_NOISE},
    "heun_churn": {"batch": GLOBAL_NOISE},
    "dpm_2_churn": {"batch": GLOBAL_NOISE},
    "dpm_fast": {"output": OWN_STEPS},
    "dpm_fast_eta": {"output": OWN_STEPS},
    "lms": {"order": "declared 4, its order; over the kit's 32-256 steps its PF-ODE error "
                     "falls like h^3.53, still steepening towards 4 (3.1, 3.6, 3.8 per "
                     "doubling), and 3 would fail too (3.53 > 3 + 0.5)"},
}
#: What a failure holds back (harness.testing: "fix the failures above first").
HELD_BACK = ("order", "convergence")


@pytest.mark.parametrize("name", ADAPTED)
def test_the_kits_verdicts(name):
    report = check_sampler(name, samples=SAMPLES, raise_on_failure=False)
    failing = set(FAILS.get(name.split(":")[1], {}))
    expected = {check: "failed" for check in failing}
    if failing:
        expected.update({check: "skipped" for check in HELD_BACK if check not in failing})
    found = {r.name: r.status for r in report.results if r.status != "passed"}
    assert found == expected, str(report)
    if failing:
        rest = check_sampler(name, samples=SAMPLES, raise_on_failure=False,
                             checks=[check for check in CHECKS if check not in failing])
        assert not [r for r in rest.results if r.status != "passed"], str(rest)
