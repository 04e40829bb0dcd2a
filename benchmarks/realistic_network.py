"""Every sampler's overhead on a network of the size the field benchmarks, and ours
against k-diffusion's loops on it.

    python benchmarks/realistic_network.py [--device cuda] [--batch 512] [--steps 10]
        [--modes fp32:no,fp32:yes,bf16:no,bf16:yes] [--samplers all] [--rounds 1]
        [--markdown PATH] [--json PATH]

The network is `untrained-unet-32` (`harness.models.speed_unet`): the DDPM++ CIFAR-10
layout (56 M parameters, 18 GFLOP per sample and call) with random weights, since speed
does not depend on them. For each network mode (dtype `harness.models.precision`, with or
without `torch.compile`), after one untimed forward (compilation) and, per sampler, an
untimed two-step run at the same batch (as the runner warms each sampler):

* every built-in sampler, `--steps` steps of the karras grid, one `generate` run:

      overhead = wall of the run / wall of the same number of bare network calls

  the bare calls (`model.denoise` on a batch of the same size, back to back, the device
  synchronised before and after) timed right after the run. 1.00: the sampler adds
  nothing to its network. Also the time inside the run's own network calls
  (`harness.core.network_clock`, as the runner measures it) and its ratio, the NFE
  counted at the model (with the sampler's declared NFE beside it) and samples/s.
* ours against k-diffusion's `sample_euler`, `sample_heun` and `sample_dpmpp_2m` on
  the same denoiser and sigmas: ratio = wall of our `generate` / wall of (the same x_T,
  drawn the same way, then k-diffusion's loop), the two interleaved over `--rounds`
  (median reported), and the largest difference between the two outputs.

Goals on one GPU at batch 512 (issue 24): overhead <= 1.02 for every sampler, ours /
k-diffusion <= 1.0. On the CPU the script is a dry run of the plumbing (`--device cpu
--batch 2 --steps 2`): there is no device to synchronise and the ratios are those of a
shared machine. Without k-diffusion (it is an optional extra) the comparison is left out
with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from harness.bench.recording import atomic
from harness.core.counting import CountedModel
from harness.core.network_clock import NetworkClock
from harness.core.noise import SampleNoise
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.metrics.timing import clock
from harness.models.precision import configure_model, describe
from harness.models.speed_unet import CONFIG, untrained_unet_32
from harness.plugin.manager import get_plugins

MODEL = "untrained-unet-32"
SCHEDULE = "karras"
WARM_UP_STEPS = 2
SEED = 0
#: Ours against k-diffusion's loop for the same method.
KDIFFUSION_PAIRS = (("euler", "sample_euler"), ("heun", "sample_heun"),
                    ("dpmpp_2m", "sample_dpmpp_2m"))
OVERHEAD_GOAL = 1.02
KDIFFUSION_GOAL = 1.0
#: `--tiny`: the same layout at an eighth of the width, one block per level, for a dry
#: run of the plumbing on a CPU in seconds (and the tests); its timings mean nothing.
TINY = dataclasses.replace(CONFIG, channels=(16, 32, 32, 32), blocks=1, emb_dim=64,
                           groups=8)


def builtin_samplers() -> list[str]:
    """The harness's own samplers (not the adapters of other libraries, `lib:name`)."""
    return [name for name in get_plugins().samplers.names() if ":" not in name]


def parse_modes(text: str) -> list[tuple[str, bool]]:
    """"fp32:no,bf16:yes" -> [("fp32", False), ("bf16", True)]."""
    modes = []
    for item in text.replace(" ", ",").split(","):
        if item:
            dtype, _, compiled = item.partition(":")
            if compiled not in ("yes", "no"):
                raise SystemExit(f"--modes: {item!r} is not DTYPE:yes or DTYPE:no")
            modes.append((dtype, compiled == "yes"))
    return modes


def bare_calls(model: Any, x: torch.Tensor, sigma: float, calls: int,
               device: torch.device) -> float:
    """Seconds of `calls` back-to-back network calls, the device synchronised around."""
    start = clock(device)
    for _ in range(calls):
        model.denoise(x, sigma)
    return clock(device) - start


def measure_sampler(model: Any, name: str, batch: int, steps: int,
                    device: torch.device) -> dict[str, Any]:
    """One timed `generate` run of sampler `name` and its bare network calls."""
    sampler = get_plugins().samplers.get(name)
    params = sampler.make_params()
    indices = list(range(batch))
    generate(model, sampler, make_grid(model.sde, SCHEDULE, WARM_UP_STEPS), SEED + 1,
             indices, params)
    grid = make_grid(model.sde, SCHEDULE, steps)
    counted = CountedModel(model, NetworkClock(device))
    start = clock(device)
    samples = generate(counted, sampler, grid, SEED, indices, params)
    wall = clock(device) - start
    inside = counted.clock.seconds()
    x = torch.randn_like(samples) * grid.sigma[1]
    bare = bare_calls(model, x, grid.sigma[1], counted.nfe.calls, device)
    return {"sampler": name, "nfe": counted.nfe.rows / batch,
            "nfe_declared": sampler.expected_nfe(steps, params, grid.sigma[-1] == 0.0),
            "nfe_calls": counted.nfe.calls, "wall_s": wall, "network_inside_s": inside,
            "bare_network_s": bare, "overhead": wall / bare,
            "overhead_inside": wall / inside if inside > 0 else math.nan,
            "samples_per_s": batch / wall,
            "finite": bool(torch.isfinite(samples).all())}


def kdiffusion_module() -> tuple[Optional[Any], str]:
    """k-diffusion's `sampling` module as the harness's adapter loads it, or None."""
    from harness_plugins import kdiffusion_loading

    try:
        loaded = kdiffusion_loading.load()
    except ImportError as err:  # sampling.py's own imports (torchsde) missing
        return None, f"k-diffusion's sampling.py does not load: {err}"
    if loaded is None:
        return None, "k-diffusion is not installed (pip install k-diffusion --no-deps)"
    return loaded.module, f"k-diffusion {loaded.version}, {loaded.how}"


def compare_kdiffusion(model: Any, kd: Any, ours: str, theirs: str, batch: int,
                       steps: int, rounds: int, device: torch.device) -> dict[str, Any]:
    """Ours against k-diffusion's loop `theirs` on the same network, sigmas and x_T.

    Both sides draw x_T the same way (the harness's per-sample streams, as `generate`
    does), so each round's two outputs are compared as they are timed: no extra runs.
    Ours ran just before (`measure_sampler`), so the first round is warm.
    """
    sampler = get_plugins().samplers.get(ours)
    params = sampler.make_params()
    grid = make_grid(model.sde, SCHEDULE, steps)
    sigmas = torch.tensor(grid.sigma, device=device, dtype=model.dtype)
    indices = list(range(batch))
    loop = getattr(kd, theirs)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # k-diffusion passes sigma * ones(B); one level as a stride-0 view, as ours do.
        return model.denoise(x, sigma[:1].expand(x.shape[0]))

    def run_ours() -> torch.Tensor:
        return generate(model, sampler, grid, SEED, indices, params)

    def run_theirs() -> torch.Tensor:
        x_T = sigmas[0] * SampleNoise(SEED, indices, model.data.shape, device=device,
                                      dtype=model.dtype)()
        return loop(denoiser, x_T, sigmas, disable=True)

    rounds_out = [(_timed(run_ours, device), _timed(run_theirs, device))
                  for _ in range(rounds)]
    (_, ours_out), (_, theirs_out) = rounds_out[-1]
    difference = (ours_out - theirs_out).abs().max() / theirs_out.abs().max()
    return {"case": f"{ours} / {theirs}", "sampler": ours, "kdiffusion": theirs,
            "ours_s": statistics.median(a[0] for a, _ in rounds_out),
            "theirs_s": statistics.median(b[0] for _, b in rounds_out),
            "ratio": statistics.median(a[0] / b[0] for a, b in rounds_out),
            "max_relative_difference": float(difference)}


def _timed(fn: Callable[[], torch.Tensor], device: torch.device
           ) -> tuple[float, torch.Tensor]:
    start = clock(device)
    out = fn()
    return clock(device) - start, out


def measure_mode(dtype: str, compiled: bool, args: argparse.Namespace,
                 device: torch.device, kd: Optional[Any]) -> dict[str, Any]:
    """Every sampler and the k-diffusion pairs with the network in one mode."""
    model = configure_model(untrained_unet_32(device, config=args.config), dtype,
                            compile=compiled)
    x = torch.randn(args.batch, *model.data.shape, device=device)
    start = clock(device)
    model.denoise(x, 1.0)  # compiles, when asked to
    first = clock(device) - start
    forward = bare_calls(model, x, 1.0, 3, device) / 3
    label = f"{dtype}{' compiled' if compiled else ''}"
    print(f"{label}: first call {first:.2f} s, then {1e3 * forward:.1f} ms per call",
          file=sys.stderr)
    rows = []
    for name in args.samplers:
        rows.append({"network": dtype, "compile": compiled,
                     **measure_sampler(model, name, args.batch, args.steps, device)})
        print(f"  {name}: overhead {rows[-1]['overhead']:.3f}", file=sys.stderr)
    pairs = [] if kd is None else [
        {"network": dtype, "compile": compiled,
         **compare_kdiffusion(model, kd, ours, theirs, args.batch, args.steps,
                              args.rounds, device)}
        for ours, theirs in KDIFFUSION_PAIRS if ours in args.samplers]
    return {"network": dtype, "compile": compiled, "first_call_s": first,
            "forward_s": forward, "describe": describe(model), "samplers": rows,
            "kdiffusion": pairs}


def markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"Model `{setup['model']}` (UNTRAINED, random weights: speed only), "
        f"{setup['parameters'] / 1e6:.1f} M parameters, on {setup['device_name']}; "
        f"batch {setup['batch']}, {setup['steps']} steps ({SCHEDULE}), one run per "
        f"sampler after a warm-up. overhead = run wall / the same number of bare network "
        f"calls timed right after it; `inside` divides by the time inside the run's own "
        f"network calls. Goal (GPU, batch 512): overhead <= {OVERHEAD_GOAL}. "
        f"Written by `benchmarks/realistic_network.py`.",
        "",
        "| network | compile | forward (ms) | sampler | NFE (declared) | wall (s) | "
        "bare network (s) | overhead | inside | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in result["modes"]:
        for r in mode["samplers"]:
            lines.append(
                f"| {r['network']} | {'yes' if r['compile'] else 'no'} | "
                f"{1e3 * mode['forward_s']:.1f} | {r['sampler']} | {r['nfe']:g} "
                f"({r['nfe_declared']}) | {r['wall_s']:.4f} | {r['bare_network_s']:.4f} | "
                f"{r['overhead']:.3f} | {r['overhead_inside']:.3f} | "
                f"{r['samples_per_s']:.1f} |")
    pairs = [p for mode in result["modes"] for p in mode["kdiffusion"]]
    lines += ["", f"Ours / k-diffusion ({result['kdiffusion']}): same network, sigmas "
              f"and x_T; median of {setup['rounds']} interleaved round(s). Goal: <= "
              f"{KDIFFUSION_GOAL}.", ""]
    if pairs:
        lines += ["| network | compile | ours / theirs | ours (s) | k-diffusion (s) | "
                  "ratio | max relative difference |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['network']} | {'yes' if p['compile'] else 'no'} | {p['case']} | "
                  f"{p['ours_s']:.4f} | {p['theirs_s']:.4f} | {p['ratio']:.3f} | "
                  f"{p['max_relative_difference']:.1e} |" for p in pairs]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", default="fp32:no,fp32:yes,bf16:no,bf16:yes",
                        help="network dtype:compile pairs")
    parser.add_argument("--samplers", default="all",
                        help="comma-separated built-in samplers, or all")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of ours against k-diffusion")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--tiny", action="store_true",
                        help="a network of the same layout, 1/8 as wide: plumbing only")
    args = parser.parse_args(argv)
    args.config = TINY if args.tiny else CONFIG
    args.samplers = (builtin_samplers() if args.samplers == "all"
                     else [s for s in args.samplers.split(",") if s])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; --device cpu is a dry run")
    if device.type != "cuda":
        print(f"{device}: no CUDA, so no device synchronisation (CUDA-only) and no TF32; "
              f"the timings are a dry run of the plumbing, not the goals", file=sys.stderr)
    kd, how = kdiffusion_module()
    if kd is None:
        print(f"ours / k-diffusion left out: {how}", file=sys.stderr)
    parameters = sum(p.numel() for p in untrained_unet_32(config=args.config).parameters())
    result: dict[str, Any] = {
        "setup": {"model": MODEL if not args.tiny else f"{MODEL} --tiny",
                  "config": args.config.to_dict(), "parameters": parameters,
                  "device": str(device),
                  "device_name": (torch.cuda.get_device_name(device)
                                  if device.type == "cuda" else "CPU"),
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                  "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())},
        "kdiffusion": how, "modes": []}
    with torch.no_grad():
        for dtype, compiled in parse_modes(args.modes):
            result["modes"].append(measure_mode(dtype, compiled, args, device, kd))
            # After every mode: a run stopped by a time limit keeps what it measured.
            write(result, args.markdown, args.json)
    print(markdown(result))
    return result


def write(result: dict[str, Any], table: Optional[Path], numbers: Optional[Path]) -> None:
    for path, text in ((table, markdown(result)), (numbers, json.dumps(result, indent=1))):
        if path is not None:
            atomic.write_text(path, text)


if __name__ == "__main__":
    main()
