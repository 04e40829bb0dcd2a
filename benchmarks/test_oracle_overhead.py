"""What the harness adds to a cheap network: every sampler on the 64-D mixture oracle.

The exact oracle costs about as much per call as a small element-wise network, so here
the loop's own work (noise, coefficient updates, the model boundary) shows; on the digits
U-Net it is lost in the network's time (`test_sampler_overhead.py`). For each sampler at
batch 256 and 4096, 10 steps of the karras grid under VP:

    ratio = wall time of one `generate` run / wall time of NFE bare `model.score` calls

where the bare calls (as many as the run made, same batch, at the grid's times) are
timed right after each run, so that numerator and denominator see the same machine (on
a shared machine a single call timed alone can be several times faster than the same
call inside a run of ten). 1.00 means the sampler costs nothing beyond its network
calls, the initial noise x_T included. Ratios are medians over rounds, with their range.

Beside it, ours against k-diffusion's `sample_heun` and `sample_euler` (Karras et al.
2022; Crowson's reference implementation) on the same oracle under EDM, the same
denoiser, identical sigmas and the same x_T, at batch 4096: ratio = our `generate` /
(torch.randn x_T + k-diffusion's loop), sides interleaved. The outputs are checked to
agree, so both do the same work. k-diffusion is installed by `tox -e microbench` only.

Times are CPU seconds of this single-threaded process (`time.process_time`), which
contention for the cores inflates far less than wall-clock time.

Results: `results/microbench/oracle.md` and pytest-benchmark's JSON. Timings on a shared
machine are no test: nothing here asserts a speed.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import pytest
import torch

from harness.bench.recording import atomic
from harness.bench.running.capture import CAPTURE_RTOL, CAPTURED_NOISE, CapturedLoop
from harness.core import host_allocator
from harness.core.counting import CountedModel
from harness.core.fused_noise import draw_numbers, noise_backend
from harness.core.noise import SampleNoise
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import make_sde
from harness.models.oracle import GaussianMixture, mixture_64d
from harness.plugin.manager import get_plugins
from harness_plugins import kdiffusion_loading

from machine_load import load_average, load_line  # benchmarks/ is on sys.path under pytest

SAMPLERS = ("euler", "heun", "euler_maruyama", "predictor_corrector", "langevin",
            "lambda_sde")
BATCHES = (256, 4096)
STEPS = 10
ROUNDS = {256: 7, 4096: 5}
GOAL = 1.10
#: CPU seconds of this process (one torch thread): other jobs on a shared machine slow
#: it down far less than they stretch wall-clock time, which moved 2-5x within seconds.
CLOCK = time.process_time
OUT = Path(os.environ.get("HARNESS_MICROBENCH_OUT",
                          Path(__file__).resolve().parents[1] / "results" / "microbench"))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def table() -> Iterator[dict[str, dict]]:
    rows: dict[str, dict] = {}
    start = load_average()
    yield rows
    if rows:
        write_table(rows, OUT / "oracle.md", load_line(start, load_average()))


def _spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.3f} "
            f"[{min(values):.3f}-{max(values):.3f}]")


def write_table(rows: dict[str, dict], path: Path, load: str = "") -> None:
    lines = [
        "# Loop overhead on the 64-D mixture oracle",
        "",
        f"CPU, 1 torch thread, CPU seconds of the process (`time.process_time`), {STEPS} "
        f"steps (karras grid); median [min-max] over rounds. "
        f"Overhead = generate wall / the same number of bare network calls at the same "
        f"batch, timed right after each run. k-diffusion = ours / k-diffusion on the same "
        f"denoiser, sigmas and x_T (EDM). Written by `benchmarks/test_oracle_overhead.py` "
        f"(`tox -e microbench`); goal <= {GOAL:.2f} for the overhead, <= 1.00 against "
        f"k-diffusion. Host allocator: {host_allocator.describe()}. Noise at batch 4096: "
        f"{noise_backend('cpu', draw_numbers(4096, 64))}; at 256: "
        f"{noise_backend('cpu', draw_numbers(256, 64))}; in captured loops: "
        f"{CAPTURED_NOISE}. {load}",
        "",
        "| case | batch | NFE calls | network call (ms) | run (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in sorted(rows.items()):
        lines.append(f"| {row['case']} | {row['batch']} | {row['nfe_calls']} | "
                     f"{1e3 * row['network_s']:.3f} | {1e3 * row['wall_s']:.1f} | "
                     f"{_spread(row['ratios'])} |")
    compiles = {row["case"].split(" captured")[0]: row["compile_s"]
                for row in rows.values() if "compile_s" in row}
    if compiles:
        lines += ["", "Captured loops' compilation, paid once per sampler and batch shape at "
                      "the untimed warm-up (with the network compiled alone for the "
                      "denominator, and inductor's cache as this run found it): "
                  + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in compiles.items())
                  + "."]
    loaded = sorted({row["k_diffusion"] for row in rows.values() if "k_diffusion" in row})
    if loaded:
        lines += ["", *(f"k-diffusion rows: {how}." for how in loaded)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, "\n".join(lines) + "\n")  # a failed write keeps the old table


def _seconds(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def _bare_calls(model: GaussianMixture, batch: int, times: list[float]) -> float:
    """Seconds for one `model.score` call at each of `times`, back to back, at this batch."""
    x = model.sde.prior_std * torch.randn(batch, model.data.shape[0], dtype=model.dtype)
    return _seconds(lambda: [model.score(x, t) for t in times])


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_oracle_overhead(benchmark, table, name, batch):
    model = mixture_64d(make_sde("vp"))
    sampler = get_plugins().samplers.get(name)
    params = sampler.make_params()
    grid = make_grid(model.sde, "karras", STEPS)
    indices = list(range(batch))
    runs: list[tuple[float, int, float]] = []

    def sample():
        counted = CountedModel(model)
        start = CLOCK()
        generate(counted, sampler, grid, seed=0, indices=indices, params=params)
        wall = CLOCK() - start
        calls = counted.nfe.calls
        times = [grid.t[i * len(grid.t) // calls] for i in range(calls)]
        runs.append((wall, calls, _bare_calls(model, batch, times)))

    benchmark.pedantic(sample, rounds=ROUNDS[batch], warmup_rounds=1, iterations=1)
    runs = runs[-ROUNDS[batch]:]
    ratios = [wall / bare for wall, _, bare in runs]
    row = {"case": name, "batch": batch, "nfe_calls": runs[0][1], "ratios": ratios,
           "network_s": statistics.median(bare / calls for _, calls, bare in runs),
           "wall_s": statistics.median(wall for wall, _, _ in runs)}
    benchmark.extra_info.update(row, steps=STEPS, threads=torch.get_num_threads(),
                                goal=GOAL)
    table[f"{name}-{batch:05d}"] = row


@pytest.mark.parametrize("batch", BATCHES)
def test_noise_draw_against_network_call(benchmark, table, batch):
    """The floor of a stochastic sampler's ratio on this CPU: one Philox draw per step.

    ratio = one `SampleNoise` draw / one bare `model.score` call, interleaved.
    """
    model = mixture_64d(make_sde("vp"))
    noise = SampleNoise(0, range(batch), model.data.shape, dtype=model.dtype)
    x = model.sde.prior_std * noise()
    pairs: list[tuple[float, float]] = []

    def interleaved():
        pairs.append((_seconds(noise), _seconds(lambda: model.score(x, 0.5))))

    benchmark.pedantic(interleaved, rounds=3 * ROUNDS[batch], warmup_rounds=1,
                       iterations=1)
    pairs = pairs[-3 * ROUNDS[batch]:]
    row = {"case": "one noise draw / one network call", "batch": batch, "nfe_calls": 1,
           "ratios": [a / b for a, b in pairs],
           "network_s": statistics.median(b for _, b in pairs),
           "wall_s": statistics.median(a for a, _ in pairs)}
    benchmark.extra_info.update(row)
    table[f"zy-noise-{batch:05d}"] = row


KD_BATCH = 4096


def k_diffusion_sampling() -> tuple[ModuleType, str]:
    """k-diffusion's `sampling` module and how it was loaded; skips when not installed.

    Loaded as the harness's adapter loads it (`harness_plugins.kdiffusion_loading`):
    `import k_diffusion` imports the whole package, whose training stack may not import
    here (a torchvision wheel built against CUDA torch stops at "operator
    torchvision::nms does not exist" beside a CPU-only torch); the loops timed here need
    none of it, so `sampling.py` is then loaded on its own. The loops that run are
    k-diffusion's code either way.
    """
    loaded = kdiffusion_loading.load()
    if loaded is None:
        pytest.skip("k-diffusion is installed by tox -e microbench")
    return loaded.module, f"k-diffusion {loaded.version}, {loaded.how}"


@pytest.mark.parametrize("ours, theirs", [("heun", "sample_heun"),
                                          ("euler", "sample_euler")])
def test_against_k_diffusion(benchmark, table, ours, theirs):
    kd, loaded = k_diffusion_sampling()
    model = mixture_64d(make_sde("edm"))
    sampler = get_plugins().samplers.get(ours)
    grid = make_grid(model.sde, "karras", STEPS)
    assert grid.t == grid.sigma  # EDM: t = sigma, so both walk the same levels
    sigmas = torch.tensor(grid.sigma, dtype=model.dtype)
    indices = list(range(KD_BATCH))

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # k-diffusion passes sigma * ones(B); a stride-0 view tells the oracle "one level"
        # (no values read), the path our samplers take too.
        return model.denoise(x, sigma[:1].expand(x.shape[0]))

    def run_ours() -> torch.Tensor:
        return generate(model, sampler, grid, seed=0, indices=indices)

    def run_theirs() -> torch.Tensor:
        x = torch.randn(KD_BATCH, 64, dtype=model.dtype) * sigmas[0]
        return getattr(kd, theirs)(denoiser, x, sigmas, disable=True)

    # Same work: from the same x_T both give the same samples, to float rounding.
    start = sigmas[0] * SampleNoise(0, indices, (64,), dtype=model.dtype)()
    reference = getattr(kd, theirs)(denoiser, start, sigmas, disable=True)
    agreement = float((reference - run_ours()).abs().max())
    assert agreement < 1e-6, agreement

    pairs: list[tuple[float, float]] = []

    def interleaved():
        pairs.append((_seconds(run_ours), _seconds(run_theirs)))

    benchmark.pedantic(interleaved, rounds=ROUNDS[KD_BATCH], warmup_rounds=1, iterations=1)
    pairs = pairs[-ROUNDS[KD_BATCH]:]
    row = {"case": f"{ours} / k-diffusion {theirs}", "batch": KD_BATCH,
           "nfe_calls": 2 * STEPS - 1 if ours == "heun" else STEPS,
           "ratios": [a / b for a, b in pairs], "network_s": float("nan"),
           "wall_s": statistics.median(a for a, _ in pairs),
           "theirs_s": statistics.median(b for _, b in pairs),
           "max_abs_difference": agreement, "k_diffusion": loaded}
    benchmark.extra_info.update(row, steps=STEPS, goal=1.0)
    table[f"zz-kdiffusion-{ours}"] = row


CAPTURED = ("euler", "heun", "euler_maruyama", "langevin", "predictor_corrector", "lambda_sde")


@pytest.mark.parametrize("name", CAPTURED)
def test_captured_loop(benchmark, table, name):
    """The loop compiled whole (`--capture compiled`), at batch 4096, two ratios:

    - captured run / eager run (the same `generate`, interleaved): what capture saves;
    - captured run / the same number of calls of the network compiled alone (inductor,
      one graph per level, as the captured loop holds them): the loop's overhead when
      the network is compiled too. It can fall below 1: the compiled loop fuses the state
      updates into the network's own first and last passes, which the network compiled
      alone still makes.

    Compile times (one per sampler, paid at warm-up) are in the JSON, not in the ratios.
    """
    batch = KD_BATCH
    model = mixture_64d(make_sde("vp"))
    sampler = get_plugins().samplers.get(name)
    loop = CapturedLoop(sampler, torch.device("cpu"))
    params = sampler.make_params()
    grid = make_grid(model.sde, "karras", STEPS)
    indices = list(range(batch))
    calls = CountedModel(model)
    generate(calls, sampler, grid, seed=0, indices=indices, params=params)
    times = [grid.t[i * len(grid.t) // calls.nfe.calls] for i in range(calls.nfe.calls)]
    x = model.sde.prior_std * torch.randn(batch, model.data.shape[0], dtype=model.dtype)
    with torch._dynamo.config.patch(recompile_limit=2 * STEPS):
        network = torch.compile(model.score, fullgraph=True)
        compile_s = _seconds(lambda: [network(x, t) for t in times])
    start = time.perf_counter()
    eager = generate(model, sampler, grid, seed=0, indices=indices, params=params)
    captured = generate(model, loop, grid, seed=0, indices=indices, params=params)
    compile_s += time.perf_counter() - start
    assert loop.captured, loop.mode
    error = ((captured - eager).norm(dim=1) / eager.norm(dim=1)).median()
    # float64 samples, float32 normals: the same samples to the noise's rounding (`capture`)
    assert error < CAPTURE_RTOL[torch.float64], error

    runs: list[tuple[float, float, float]] = []

    def interleaved():
        with torch._dynamo.config.patch(recompile_limit=2 * STEPS):
            runs.append((
                _seconds(lambda: generate(model, loop, grid, seed=0, indices=indices,
                                          params=params)),
                _seconds(lambda: generate(model, sampler, grid, seed=0, indices=indices,
                                          params=params)),
                _seconds(lambda: [network(x, t) for t in times])))

    rounds = 2 * ROUNDS[batch]  # a round is short, and its three sides drift apart
    benchmark.pedantic(interleaved, rounds=rounds, warmup_rounds=1, iterations=1)
    runs = runs[-rounds:]
    for key, ratios in (("eager run", [c / e for c, e, _ in runs]),
                        ("compiled network calls (fused across: can be < 1)",
                         [c / n for c, _, n in runs])):
        row = {"case": f"{name} captured / {key}", "batch": batch,
               "nfe_calls": calls.nfe.calls, "ratios": ratios,
               "network_s": statistics.median(n / calls.nfe.calls for _, _, n in runs),
               "wall_s": statistics.median(c for c, _, _ in runs),
               "compile_s": compile_s, "median_relative_difference": float(error)}
        benchmark.extra_info.setdefault("rows", []).append(row)
        table[f"zx-captured-{name}-{key[:8]}"] = row
