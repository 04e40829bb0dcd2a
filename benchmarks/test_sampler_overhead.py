"""What a sampler costs beyond its network evaluations (pytest-benchmark).

For every built-in sampler on the shipped digits model, at batch 256 and 10 steps (one
forward takes 0.1-0.9 s on the shared 2-core CI machine; the per-step costs are the same
at 20 steps, and the fixed ones, such as seeding the noise streams, weigh more at 10):

    overhead = wall time of one `generate` run / (counted NFE calls x bare forward time)

where the bare forward is one `model.denoise` call on a batch of the same size
(`harness.metrics.timing.forward_time`). 1.00 means the sampler adds nothing to the network.
Goals on the CPU: <= 1.05 for euler, heun, euler_maruyama and langevin, <= 1.10 for
predictor_corrector (whose corrector computes per-sample norms every step).

Run with `tox -e microbench` (or `pytest benchmarks --benchmark-json=...`). The ratios are
in each benchmark's `extra_info` and in `results/microbench/overhead.md`, never in an
assert: timings on a shared machine are no test.

How it is measured: on a machine shared with other jobs the speed of the CPU changes from
second to second, so a forward timed before a run can be 2x off the forwards inside it. Two ratios are therefore kept per round:

* `overhead` (the headline): wall / (calls x mean forward time *inside this run*). Every
  denoiser call of the run (`model._denoise`: preconditioning plus network, exactly what
  `forward_time` times, without the counter) is timed as it happens, so numerator and
  denominator see the same machine; wall minus their sum is what the sampler, the model
  boundary, the noise streams and `generate` cost.
* `overhead_separate`: wall / (calls x `harness.metrics.timing.forward_time`), the forward timed
  by itself right before the round (pytest-benchmark's untimed `setup`), kept to show how
  far a separately timed forward can be off; the runner divides by the time inside the
  run's own network calls (`harness.core.network_clock`), as `overhead` does here.

Next to the ratios, `ops_per_nfe` counts the tensor operations the run dispatches outside
the denoiser, per network call (at the dispatcher, on a small batch: the count does not
depend on the batch size). On a GPU each is a kernel launch of a few microseconds, which
is what decides the overhead of a small network there; on this CPU at batch 256 the
network dominates and every sampler is within a fraction of a percent.

pytest-benchmark owns the rounds, so its JSON holds the distribution of the sampling run
alone. Clock reads go through `harness.metrics.timing.clock` (synchronised on CUDA, which
then also synchronises around every timed network call). Ratios are medians over rounds.
Set HARNESS_BENCH_DEVICE=cuda to measure on a GPU.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.core.counting import CountedModel
from harness.core.model import ScoreModel
from harness.plugin.manager import get_plugins
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.metrics.timing import clock, forward_time

from machine_load import load_average, load_line  # benchmarks/ is on sys.path
from shipped_model import digits_model  # benchmarks/ is on sys.path under pytest

DEVICE = torch.device(os.environ.get("HARNESS_BENCH_DEVICE", "cpu"))
BATCH = 256
STEPS = 10
ROUNDS = 3
FORWARD_REPEATS = 3
SAMPLERS = ("euler", "heun", "euler_maruyama", "langevin", "predictor_corrector",
            "lambda_sde")
GOALS = {"euler": 1.05, "heun": 1.05, "euler_maruyama": 1.05, "langevin": 1.05,
         "predictor_corrector": 1.10}
OUT = Path(os.environ.get("HARNESS_MICROBENCH_OUT",
                          Path(__file__).resolve().parents[1] / "results" / "microbench"))


@pytest.fixture(scope="module")
def model() -> tuple[ScoreModel, str]:
    return digits_model(DEVICE)


@pytest.fixture(scope="module")
def table() -> Iterator[dict[str, dict]]:
    """Rows collected by the tests; written to overhead.md when the module is done."""
    rows: dict[str, dict] = {}
    start = load_average()
    yield rows
    if rows:
        write_table(rows, OUT / "overhead.md", load_line(start, load_average()))


def write_table(rows: dict[str, dict], path: Path, load: str = "") -> None:
    first = next(iter(rows.values()))
    lines = [
        "# Sampler overhead: wall / (NFE calls x network forward)",
        "",
        f"Model: {first['model']}; device {first['device']}, {first['threads']} torch "
        f"threads; batch {BATCH}, {STEPS} steps (karras grid); medians over {ROUNDS} "
        f"rounds. `overhead` divides by the forwards timed inside the same run, "
        f"`separate` by `harness.metrics.timing.forward_time` timed just before it (noisier on a "
        f"shared machine). Written by `benchmarks/test_sampler_overhead.py` "
        f"(`tox -e microbench`). {load}",
        "",
        "| sampler | NFE calls | forward (ms) | run (ms) | outside network (ms) | overhead "
        "| separate | ops/NFE outside network | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        goal = GOALS.get(name)
        lines.append(
            f"| {name} | {row['nfe_calls']} | {1e3 * row['forward_s']:.2f} | "
            f"{1e3 * row['wall_s']:.1f} | {1e3 * row['outside_network_s']:.2f} | "
            f"{row['overhead']:.4f} | {row['overhead_separate']:.3f} | "
            f"{row['ops_per_nfe']:.1f} | {'-' if goal is None else f'<= {goal:.2f}'} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


class DenoiserTimer:
    """Times every `_denoise` call of `model` while `active`: the network's share of a run.

    Installed as an instance attribute, so the class (and every other model) is untouched;
    `remove()` restores the class method.
    """

    def __init__(self, model: ScoreModel, device: torch.device):
        self.model, self.device = model, device
        self.inner = model._denoise
        self.active = False
        self.seconds = 0.0
        model._denoise = self  # type: ignore[method-assign]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.inner(x, sigma)
        start = clock(self.device)
        out = self.inner(x, sigma)
        self.seconds += clock(self.device) - start
        return out

    def remove(self) -> None:
        del self.model._denoise


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched while active, except inside `_denoise`."""

    def __init__(self, model: ScoreModel):
        super().__init__()
        self.model, self.count, self.depth = model, 0, 0
        self.inner = model._denoise
        model._denoise = self.denoise  # type: ignore[method-assign]

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.depth += 1
        try:
            return self.inner(x, sigma)
        finally:
            self.depth -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += self.depth == 0
        return func(*args, **(kwargs or {}))

    def remove(self) -> None:
        del self.model._denoise


def ops_per_nfe(model: ScoreModel, run, batch: int = 4) -> float:
    """Operations outside the network per evaluation of `run(counted_model, indices)`."""
    counter = OpCounter(model)
    counted = CountedModel(model)
    try:
        with counter:
            run(counted, list(range(batch)))
    finally:
        counter.remove()
    return counter.count / counted.nfe.calls


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_overhead(benchmark, model, table, name):
    model, which = model
    sampler = get_plugins().samplers.get(name)
    params = sampler.make_params()
    grid = make_grid(model.sde, "karras", STEPS)
    indices = list(range(BATCH))
    forwards: list[float] = []
    runs: list[tuple[float, int, float]] = []
    timer = DenoiserTimer(model, DEVICE)

    def measure_forward():
        forwards.append(forward_time(model, BATCH, warmup=1, repeats=FORWARD_REPEATS))

    def sample():
        counted = CountedModel(model)
        timer.seconds, timer.active = 0.0, True
        start = clock(DEVICE)
        x = generate(counted, sampler, grid, seed=0, indices=indices, params=params)
        wall = clock(DEVICE) - start
        timer.active = False
        runs.append((wall, counted.nfe.calls, timer.seconds))
        return x

    try:
        benchmark.pedantic(sample, setup=measure_forward, rounds=ROUNDS, warmup_rounds=1,
                           iterations=1)
    finally:
        timer.remove()
    # The warm-up round ran setup and target too: drop its entries.
    forwards, runs = forwards[-ROUNDS:], runs[-ROUNDS:]
    inside = [wall / network for wall, _, network in runs]
    separate = [wall / (calls * fwd) for (wall, calls, _), fwd in zip(runs, forwards)]
    calls = runs[0][1]
    row = {
        "model": which, "device": str(DEVICE), "threads": torch.get_num_threads(),
        "nfe_calls": calls,
        "forward_s": statistics.median(network / calls for _, _, network in runs),
        "wall_s": statistics.median(wall for wall, _, _ in runs),
        "outside_network_s": statistics.median(wall - network for wall, _, network in runs),
        "overhead": statistics.median(inside), "overhead_separate": statistics.median(separate),
        "forward_separate_s": statistics.median(forwards),
        "ops_per_nfe": ops_per_nfe(model, lambda counted, ids: generate(
            counted, sampler, grid, seed=0, indices=ids, params=params)),
    }
    benchmark.extra_info.update(row, batch=BATCH, steps=STEPS, rounds=ROUNDS,
                                ratios=inside, ratios_separate=separate,
                                goal=GOALS.get(name))
    table[name] = row
