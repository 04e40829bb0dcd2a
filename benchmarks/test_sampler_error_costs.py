"""What the sampler-error metrics cost, as ratios measured within one run (pytest-benchmark).

Run with `pytest benchmarks/test_sampler_error_costs.py` (tox -e microbench). The numbers
of interest are in each benchmark's `extra_info`, not in asserts:

* `jacobian_over_sampling`: the exact density of a sampler's output (`discrete_kl`'s
  forward-mode Jacobian: D = 64 tangents per sample) over plain sampling of the same
  samples, both in float64 on the shipped digits model. At least D by construction;
  forward mode adds its own factor on top.
* `reference_nfe`: network evaluations per sample of `ode_error`'s reference solve
  (dopri5, rtol = atol = 1e-7, float64), made once per seed and shared by every trial.
"""

from __future__ import annotations

import torch

from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.metrics.discrete_kl import sampler_log_density
from harness.metrics.ode_error import float64_model, initial_state, reference_solve
from harness.metrics.timing import clock
from harness.plugin.manager import get_sampler

from shipped_model import digits_model  # benchmarks/ is on sys.path under pytest

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SAMPLES = 2
#: Euler's map must be invertible for these samples (else `sampler_log_density` stops with
#: NotInvertibleError): with the Philox noise, sample 1 of seed 0 folds at the last step
#: for 5, 6 and 8 steps; at 10 (the default suite's smallest budget) both are invertible.
STEPS = 10


def test_exact_density_cost_relative_to_sampling(benchmark):
    model, which = digits_model(DEVICE)
    model = float64_model(model)
    euler = get_sampler("euler")
    grid = make_grid(model.sde, "karras", STEPS)
    x_T = initial_state(model, 0, range(SAMPLES), torch.float64)

    def density():
        return sampler_log_density(model, euler, grid, x_T)

    benchmark.pedantic(density, rounds=1, iterations=1, warmup_rounds=0)
    start = clock(DEVICE)
    density()
    jacobian_s = clock(DEVICE) - start
    start = clock(DEVICE)
    generate(model, euler, grid, 0, range(SAMPLES), dtype=torch.float64)
    sampling_s = clock(DEVICE) - start
    benchmark.extra_info.update(model=which, device=str(DEVICE), samples=SAMPLES,
                                steps=STEPS, jacobian_over_sampling=jacobian_s / sampling_s)


def test_reference_solve_evaluations(benchmark):
    model, which = digits_model(DEVICE)
    model = float64_model(model)
    x_T = initial_state(model, 0, range(SAMPLES), torch.float64)
    solution = benchmark.pedantic(lambda: reference_solve(model, x_T), rounds=1,
                                  iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(model=which, device=str(DEVICE), samples=SAMPLES,
                                reference_nfe=solution.nfe, reference_end=solution.end)
