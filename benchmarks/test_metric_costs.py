"""What the likelihood metrics cost, as ratios measured within one run (pytest-benchmark).

Run with `pytest benchmarks/test_metric_costs.py` (tox -e microbench). The numbers of
interest are in each benchmark's `extra_info` (shown with `--benchmark-verbose`, saved
with `--benchmark-json`), not in asserts:

* `hutchinson_eval_over_forward`: one right-hand side of the Hutchinson NLL ODE (one
  forward with autograd on plus one VJP) over one bare forward (`model.denoise`, no
  grad) on the same batch, for the shipped digits model. The goal is <= 3.
* `exact_over_hutchinson`: wall time of a whole dopri5 NLL solve with the exact trace
  (64 VJPs per evaluation) over the same solve with one Hutchinson probe, on the 64-D
  oracle.
"""

from __future__ import annotations


import torch

from harness.metrics.likelihood import AugmentedDrift, ode_nll
from harness.models.oracle import mixture_64d
from harness.core.sde import VPSDE
from harness.metrics.timing import clock, forward_time, synchronize

from shipped_model import digits_model  # benchmarks/ is on sys.path under pytest

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = 32


def _mean_seconds(fn, repeats: int) -> float:
    fn()
    start = clock(DEVICE)
    for _ in range(repeats):
        fn()
    return (clock(DEVICE) - start) / repeats


def test_hutchinson_evaluation_cost_relative_to_one_forward(benchmark):
    model, which = digits_model(DEVICE)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, *model.data.shape, generator=gen).to(DEVICE, model.dtype)
    probe = torch.where(torch.randn(1, *x.shape, generator=gen) >= 0, 1.0, -1.0)
    flow = AugmentedDrift(model, probe.to(DEVICE, model.dtype))
    state = torch.cat([x.flatten(1), x.new_zeros(BATCH, 1)], dim=1)
    t = torch.tensor(1.0, device=DEVICE, dtype=model.dtype)

    def evaluation():
        out = flow(t, state)
        synchronize(DEVICE)
        return out

    benchmark.pedantic(evaluation, rounds=5, iterations=1, warmup_rounds=1)
    # Both measured now, in this process, one after the other: only their ratio is kept.
    augmented = _mean_seconds(evaluation, repeats=5)
    forward = forward_time(model, BATCH, sigma=1.0, warmup=1, repeats=5)
    benchmark.extra_info.update(model=which, device=str(DEVICE), batch=BATCH,
                                hutchinson_eval_over_forward=augmented / forward)


def test_nll_wall_time_hutchinson_vs_exact_trace_64d(benchmark):
    model = mixture_64d(VPSDE()).to(DEVICE)
    gen = torch.Generator(device=model.means.device).manual_seed(0)
    x = model.sample_clean(16, generator=gen)

    def solve(method: str):
        result = ode_nll(model, x, method=method, num_probes=1)
        synchronize(DEVICE)
        return result

    hutchinson = benchmark.pedantic(lambda: solve("hutchinson"), rounds=2, iterations=1,
                                    warmup_rounds=1)
    # One exact solve (tens of seconds on a CPU) against one more Hutchinson solve.
    start = clock(DEVICE)
    exact = solve("exact")
    exact_s = clock(DEVICE) - start
    hutchinson_s = _mean_seconds(lambda: solve("hutchinson"), repeats=1)
    benchmark.extra_info.update(
        device=str(DEVICE), points=x.shape[0], nfe_hutchinson=hutchinson.nfe_mean,
        nfe_exact=exact.nfe_mean, exact_over_hutchinson=exact_s / hutchinson_s,
        exact_over_hutchinson_per_nfe=(exact_s / exact.nfe_mean)
        / (hutchinson_s / hutchinson.nfe_mean))
