"""A trial as the runner builds it, for tests that call a metric directly."""

from __future__ import annotations

from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.metrics.metric import SuiteContext, TrialContext
from harness.plugin.manager import get_sampler


def sampled_trial(suite: SuiteContext, name: str, steps: int, n: int, seed: int = 0
                  ) -> TrialContext:
    """Sampler `name` with its default params on a karras grid of `steps` steps: its
    first `n` samples for `seed`, in the suite's dtype."""
    sampler = get_sampler(name)
    grid = make_grid(suite.model.sde, "karras", steps)
    params = sampler.make_params()
    samples = generate(suite.model, sampler, grid, seed, range(n), params, dtype=suite.dtype)
    return TrialContext(suite=suite, sampler=sampler, params=params, grid=grid, seed=seed,
                        samples=samples)
