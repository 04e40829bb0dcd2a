"""How the eager noise depends on the CPU's instruction set, emulated on one machine.

ATen takes float32 log and sqrt from MKL's vector math, whose code path follows the
processor (AVX-512, AVX2, SSE4.2). MKL_ENABLE_INSTRUCTIONS caps the path MKL may take and
MKL_CBWR=COMPATIBLE forces its reproducible one, so one AVX-512 machine can draw the noise
as an AVX2 or an older CPU would. Each setting runs in a fresh process (MKL reads them
once); each computes the normals of the same counters two ways:

- the harness's eager draw (`SampleNoise`, HARNESS_NOISE=eager: the committed definition);
- the same u and theta through Box-Muller in float64, rounded to float32 (a candidate
  definition whose last bits would not follow the instruction set).

Reported: the share of normals that differ from the unconstrained path, and the largest
relative difference.

    python benchmarks/noise_across_cpus.py [--samples 16384] [--out results/microbench/noise_across_cpus.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report_output import publish  # benchmarks/ is the script's folder

SETTINGS = {
    "unconstrained (this CPU's own path)": {},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL_ENABLE_INSTRUCTIONS=SSE4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
}
DIM, DRAWS, SEED = 64, 4, 3


def draw(samples: int, out: str) -> None:
    """In this process: both definitions' normals, saved to `out`."""
    from harness.core.fused_noise import draw_words
    from harness.core.noise import SampleNoise
    from harness.core.philox import WORDS, box_muller_inputs

    torch.set_num_threads(1)
    noise = SampleNoise(SEED, range(samples), (DIM,))
    eager = torch.cat([noise.draw(k) for k in range(DRAWS)])
    # The same counters as the harness's draws, by its own construction (run eagerly).
    words = [torch.cat(w) for w in zip(*(
        draw_words(noise.index_words, noise.round_keys, torch.tensor(k), DIM // WORDS)
        for k in range(DRAWS)))]
    uniform, angle = box_muller_inputs(words)
    radius = uniform.double().log().mul(-2.0).sqrt()
    angle = angle.double()
    float64 = torch.stack((radius * angle.cos(), radius * angle.sin()), -1).flatten(1).float()
    torch.save({"eager": eager, "float64 Box-Muller": float64}, out)


def differences(got: torch.Tensor, reference: torch.Tensor) -> str:
    differ = got != reference
    worst = float(((got - reference).abs() / reference.abs()).max())
    return f"{100 * float(differ.double().mean()):.2f} % ({worst:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--draw-into", help=argparse.SUPPRESS)  # the child processes
    args = parser.parse_args()
    if args.draw_into:
        draw(args.samples, args.draw_into)
        return
    start = time.perf_counter()
    drawn = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, env in SETTINGS.items():
            out = os.path.join(folder, f"{len(drawn)}.pt")
            subprocess.run([sys.executable, __file__, "--samples", str(args.samples),
                            "--draw-into", out],
                           env={**os.environ, "HARNESS_NOISE": "eager", **env}, check=True)
            drawn[name] = torch.load(out)
    reference = drawn[next(iter(SETTINGS))]
    numbers = reference["eager"].numel()
    lines = ["# The eager noise on MKL's code paths, one machine", "",
             f"{numbers} normals ({args.samples} samples x {DIM} numbers x {DRAWS} draws, "
             f"seed {SEED}); each cell: the share that differs from the unconstrained "
             "path (largest relative difference). CPU: "
             f"{torch.backends.cpu.get_cpu_capability()} as ATen sees it.", "",
             "| MKL setting | eager draw (float32 Box-Muller) | float64 Box-Muller, rounded |",
             "|---|---|---|"]
    for name, normals in list(drawn.items())[1:]:
        lines.append(f"| {name} | {differences(normals['eager'], reference['eager'])} | "
                     f"{differences(normals['float64 Box-Muller'], reference['float64 Box-Muller'])} |")
    lines += ["", f"Wall time of this script: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(lines) + "\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
