"""A tiny sharded suite, run by `tests/test_distributed.py` under torchrun and in-process.

Each rank samples its shard of the indices of the 2-D ring oracle with a stochastic
sampler, computes FID statistics of its samples (identity features) and the NLL of its
shard of test points (adaptive PF-ODE solve, and Heun's own flow); the results are
combined across ranks and rank 0 saves them:

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/distributed_worker.py --out results.pt
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Optional

import torch

from harness import distributed, generate, make_grid
from harness.fid import IdentityFeatures, reference_stats
from harness.likelihood import discretised_flow_nll
from harness.oracle import ring_2d
from harness.plugin_manager import get_sampler
from harness.sde import make_sde

NUM_SAMPLES = 37  # odd: the two shards differ in size
NUM_POINTS = 9
SAMPLER = "euler_maruyama"  # stochastic: every step draws from the per-sample streams
STEPS = 12
SEED = 5


def run(out: Optional[Path] = None) -> dict[str, Any]:
    """The suite on this process's shard; the combined results (every rank has them)."""
    distributed.init()
    model = ring_2d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", STEPS)
    mine = distributed.shard(range(NUM_SAMPLES))
    local = generate(model, get_sampler(SAMPLER), grid, seed=SEED, indices=mine)
    samples = distributed.gather_concat(local)

    features = IdentityFeatures(2)
    gen = torch.Generator().manual_seed(0)
    reference = reference_stats("ring-2d:reference", lambda: model.sample_clean(
        500, generator=gen), features, use_cache=False)
    fid, fid_n = distributed.sharded_fid(features(local), reference)

    points = model.sample_clean(NUM_POINTS, generator=torch.Generator().manual_seed(1))
    nll = distributed.sharded_nll(model, points, seed=2, batch_size=1)  # adaptive: alone
    flow = distributed.sharded_nll(model, points, seed=2, solve=functools.partial(
        discretised_flow_nll, model, get_sampler("heun"), grid))   # fixed grid: any batch
    received = distributed.broadcast_object({"from": distributed.rank()})
    agreeing = distributed.all_reduce_sum(torch.tensor([float(received == {"from": 0})]))
    result = {"world_size": distributed.world_size(), "shard": mine, "samples": samples,
              "ranks_with_rank0_object": int(agreeing),
              "fid": fid, "fid_n": fid_n, "nll_values": nll.values, "nll_nats": nll.nats,
              "nll_stderr": nll.stderr, "nll_nfe_mean": nll.nfe_mean,
              "nll_nfe_max": nll.nfe_max, "flow_values": flow.values,
              "flow_nfe_mean": flow.nfe_mean}
    if out is not None and distributed.rank() == 0:
        torch.save(result, out)
    distributed.barrier()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 saves results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on a small machine: one thread each
    try:
        run(args.out)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
