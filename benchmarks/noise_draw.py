"""Eager against compiled noise on the 64-D mixture oracle, in one process, interleaved.

Three tables, CPU seconds of this single-threaded process (`time.process_time`):

- one `SampleNoise` draw / one bare `model.score` call, per path, at batch 256 and 4096;
- the loop overhead of the samplers that draw noise, and of two that draw only x_T:
  generate / the same number of bare network calls, as `test_oracle_overhead.py` measures
  it (10 steps, karras grid, VP), per path;
- and, below them, where a compiled draw's time goes: each of its pieces run alone.

Each round times every path back to back, so both see the same machine; medians over
rounds, with their range. The compile time is that of the probe, paid before any round.

    python benchmarks/noise_draw.py [--rounds 5] [--out results/microbench/noise_draw.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from machine_load import load_average, load_line
from report_output import publish

from harness.core import fused_noise
from harness.core.host_allocator import keep_freed_memory
from harness.core.counting import CountedModel
from harness.core.noise import SampleNoise
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d
from harness.plugin.manager import get_plugins

SAMPLERS = ("euler", "heun", "euler_maruyama", "langevin", "predictor_corrector")
BATCHES = (256, 4096)
STEPS = 10
PATHS = ("eager", "compiled")
CLOCK = time.process_time


def use(path: str) -> str:
    """Make the next `SampleNoise` draw on `path`; the backend's description."""
    os.environ[fused_noise.NOISE_ENV] = path
    fused_noise.forget_probes()
    return fused_noise.noise_backend("cpu")


def draws_seconds(noise: SampleNoise, draws: int) -> float:
    start = CLOCK()
    for _ in range(draws):
        noise()
    return CLOCK() - start


def calls_seconds(model, x: torch.Tensor, times: list[float]) -> float:
    """Bare `model.score` calls at each of `times`, back to back."""
    start = CLOCK()
    for t in times:
        model.score(x, t)
    return CLOCK() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def draw_ratios(model, batch: int, rounds: int) -> dict[str, list[float]]:
    """Per path: one draw / one network call, each round timing both paths and a call."""
    x = model.sde.prior_std * torch.randn(batch, model.data.shape[0], dtype=model.dtype)
    sources = {}
    for path in PATHS:
        use(path)
        sources[path] = SampleNoise(0, range(batch), model.data.shape, dtype=model.dtype)
        sources[path]()  # warm: first-use allocations
    ratios: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(rounds):
        for path, noise in sources.items():
            use(path)  # the path is chosen at each draw
            draws = draws_seconds(noise, 10)
            ratios[path].append(draws / calls_seconds(model, x, [0.5] * 10))
    return ratios


def overheads(model, name: str, batch: int, rounds: int) -> dict[str, list[float]]:
    """Per path: generate / its bare network calls, as `test_oracle_overhead.py`."""
    sampler = get_plugins().samplers.get(name)
    params = sampler.make_params()
    grid = make_grid(model.sde, "karras", STEPS)
    x = model.sde.prior_std * torch.randn(batch, model.data.shape[0], dtype=model.dtype)
    ratios: dict[str, list[float]] = {path: [] for path in PATHS}
    for round_ in range(rounds + 1):  # round 0 warms up
        for path in PATHS:
            use(path)
            counted = CountedModel(model)
            start = CLOCK()
            generate(counted, sampler, grid, seed=0, indices=range(batch), params=params)
            run = CLOCK() - start
            calls = counted.nfe.calls
            times = [grid.t[i * len(grid.t) // calls] for i in range(calls)]
            if round_:
                ratios[path].append(run / calls_seconds(model, x, times))
    return ratios


def draw_pieces(model, batch: int, rounds: int) -> dict[str, list[float]]:
    """Where a compiled draw's time goes: each piece of `fused_noise.FusedDraw` run alone
    on the same inputs / one network call, the pieces and a call interleaved per round."""
    groups = -(-model.data.shape[0] // 4)
    fused = fused_noise.fused_draw("cpu", fused_noise.draw_numbers(batch, 4 * groups))
    words = torch.compile(fused_noise.draw_words, dynamic=True, options=fused_noise.FUSE_ALL)
    index = torch.stack((torch.arange(batch), torch.zeros(batch, dtype=torch.int64)), 1)
    keys, k = fused_noise.round_key_tensor(0, "cpu"), torch.tensor(1)
    uniform, angle = fused.inputs(index, keys, k, groups)
    radius = uniform.clone().log_().mul_(-2.0).sqrt_()
    cos, sin = angle.cos(), angle.sin()
    pieces = {
        "the whole compiled draw": lambda: fused(index, keys, k, groups, model.dtype),
        "kernel 1: counters, Philox, u and theta planes":
            lambda: fused.inputs(index, keys, k, groups),
        "of which the Philox rounds (int64 words out)": lambda: words(index, keys, k, groups),
        # On a copy of u, so that every repeat starts from the same u (the copy is about
        # a tenth of this piece's time; the draw itself works on u in place).
        "ATen: r = sqrt(-2 log u)": lambda: uniform.clone().log_().mul_(-2.0).sqrt_(),
        "ATen: cos theta, sin theta": lambda: (angle.cos(), angle.sin()),
        "kernel 2: products, interleaving, cast":
            lambda: fused.normals(radius, cos, sin, model.dtype),
    }
    x = model.sde.prior_std * torch.randn(batch, model.data.shape[0], dtype=model.dtype)
    ratios: dict[str, list[float]] = {name: [] for name in pieces}
    for round_ in range(rounds + 1):  # round 0 warms up
        call = calls_seconds(model, x, [0.5] * 10)
        for name, piece in pieces.items():
            start = CLOCK()
            for _ in range(10):
                piece()
            if round_:
                ratios[name].append((CLOCK() - start) / call)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as `harness run` does
    start_load = load_average()
    start = time.perf_counter()
    compiled = use("compiled")  # the probe: compiles once, before anything is timed
    model = mixture_64d(make_sde("vp"))
    lines = ["# Eager and compiled noise on the 64-D mixture oracle", "",
             (f"CPU, 1 torch thread, CPU seconds of the process; median [min-max] over "
             f"{args.rounds} rounds, paths interleaved. Compiled: {compiled}; "
             f"eager: {use('eager')}."), "",
             "| case | batch | eager | compiled |", "|---|---|---|---|"]
    for batch in BATCHES:
        ratios = draw_ratios(model, batch, 3 * args.rounds)
        lines.append(f"| one noise draw / one network call | {batch} | "
                     f"{spread(ratios['eager'])} | {spread(ratios['compiled'])} |")
    for name in SAMPLERS:
        for batch in BATCHES:
            ratios = overheads(model, name, batch, args.rounds)
            lines.append(f"| {name}: run / its network calls | {batch} | "
                         f"{spread(ratios['eager'])} | {spread(ratios['compiled'])} |")
    use("compiled")
    lines += ["", f"Where a compiled draw's time goes, batch {BATCHES[-1]}, each piece alone "
              f"/ one network call (CPU seconds; median [min-max] over {3 * args.rounds} "
              f"rounds):", "", "| piece | / one network call |", "|---|---|"]
    for name, ratios in draw_pieces(model, BATCHES[-1], 3 * args.rounds).items():
        lines.append(f"| {name} | {spread(ratios)} |")
    lines += ["", load_line(start_load, load_average()),
              f"Wall time of this script: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(lines) + "\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
