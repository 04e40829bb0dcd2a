"""Samples per second of one sampler on the shipped digits model, over torchrun ranks.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        benchmarks/distributed_scaling.py --threads 1

Each rank draws its strided shard of the sample indices in batches, after one untimed
warm-up batch; the run's wall time is the slowest rank's (clocks read after a barrier and
device synchronisation). Rank 0 prints the figures and writes them to
`results/microbench/scaling_<world>x<threads>.json`. Without torchrun it runs as one
process. This is a script, not a test: timings are no assert.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from harness import generate, make_grid
from harness.core import distributed
from harness.plugin.manager import get_sampler
from harness.metrics.timing import clock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shipped_model import digits_model  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "microbench"


def main() -> None:
    parser = argparse.ArgumentParser(description="samples/s over torchrun ranks")
    parser.add_argument("--sampler", default="heun")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    distributed.init()
    device = distributed.resolve_device(args.device)
    model, which = digits_model(device)
    sampler = get_sampler(args.sampler)
    grid = make_grid(model.sde, "karras", args.steps)
    mine = distributed.shard(range(args.samples))
    batches = [mine[i:i + args.batch_size] for i in range(0, len(mine), args.batch_size)]

    generate(model, sampler, grid, seed=1, indices=batches[0])  # warm-up, untimed
    distributed.barrier()
    start = clock(device)
    for indices in batches:
        generate(model, sampler, grid, seed=0, indices=indices)
    wall = distributed.all_reduce_max(clock(device) - start)

    world = distributed.world_size()
    figures = {
        "processes": world, "threads_per_process": args.threads, "device": str(device),
        "backend": "gloo" if device.type == "cpu" else "nccl", "model": which,
        "sampler": args.sampler, "steps": args.steps, "samples": args.samples,
        "batch_size": args.batch_size, "wall_s": wall, "samples_per_s": args.samples / wall,
        "host": platform.node(), "total_threads": args.threads * world,
    }
    if distributed.rank() == 0:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"scaling_{world}x{args.threads}.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures))
    distributed.shutdown()


if __name__ == "__main__":
    main()
