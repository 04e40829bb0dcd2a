"""A tiny sharded suite, run by `tests/test_distributed.py` under torchrun and in-process.

Each rank samples its shard of the indices of the 2-D ring oracle with a stochastic
sampler, computes FID statistics of its samples (identity features) and the NLL of its
shard of test points (adaptive PF-ODE solve, and a fixed-step RK4 solve); the results are
combined across ranks and rank 0 saves them:

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/distributed_worker.py --out results.pt
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import torch

from harness import generate, make_grid
from harness.core import distributed
from harness.metrics import sharded as sharded_metrics
from harness.metrics.fid import IdentityFeatures, reference_stats
from harness.metrics.likelihood import ode_nll
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_sampler
from harness.core.sde import make_sde

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
    fid, fid_n = sharded_metrics.sharded_fid(features(local), reference)

    points = model.sample_clean(NUM_POINTS, generator=torch.Generator().manual_seed(1))
    nll = sharded_metrics.sharded_nll(model, points, seed=2, batch_size=1)  # adaptive: alone
    flow = sharded_metrics.sharded_nll(model, points, seed=2, solve=functools.partial(
        ode_nll, model, solver="rk4", options={"step_size": 0.05}))  # fixed grid: any batch
    received = distributed.broadcast_object({"from": distributed.rank()})
    agreeing = distributed.all_reduce_sum(torch.tensor([float(received == {"from": 0})]))
    result = {"world_size": distributed.world_size(), "shard": mine, "samples": samples,
              "ranks_with_rank0_object": int(agreeing), "failures": failures(model, points),
              "fid": fid, "fid_n": fid_n, "nll_values": nll.values, "nll_nats": nll.nats,
              "nll_stderr": nll.stderr, "nll_nfe_mean": nll.nfe_mean,
              "nll_nfe_max": nll.nfe_max, "flow_values": flow.values,
              "flow_nfe_mean": flow.nfe_mean}
    if out is not None and distributed.rank() == 0:
        torch.save(result, out)
    distributed.barrier()
    return result


class Unpicklable(Exception):
    """An error that cannot travel to another rank (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("cannot be pickled")
        self.lock = threading.Lock()


def _failing_on_last_rank(data, indices, **options):
    if distributed.rank() == distributed.world_size() - 1:
        raise FloatingPointError("underflow in dt")
    return ode_nll(data=data, indices=indices, **options)


def failures(model, points) -> list[dict[str, str]]:
    """How work that fails on one rank only ends on each rank (type: message per case,
    one dict per rank); a hang here would end at the test's timeout."""
    def outcome(work) -> str:
        try:
            work()
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return "no error"

    def last_rank_raises() -> None:
        with distributed.shared_failure():
            if distributed.rank() == distributed.world_size() - 1:
                raise ValueError("only here")

    def rank0_raises_unpicklable() -> None:
        distributed.on_rank0(lambda: (_ for _ in ()).throw(Unpicklable()))

    def nll_solve_fails_on_last_rank() -> None:
        sharded_metrics.sharded_nll(model, points, seed=2, solve=functools.partial(
            _failing_on_last_rank, model=model))

    cases = {"shared_failure": last_rank_raises, "on_rank0": rank0_raises_unpicklable,
             "sharded_nll": nll_solve_fails_on_last_rank}
    mine = {name: outcome(work) for name, work in cases.items()}
    if not distributed.is_distributed():
        return [mine]
    every: list = [None] * distributed.world_size()
    torch.distributed.all_gather_object(every, mine)
    return every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 saves results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on a small machine: one thread each
    try:
        run(args.out)
    except BaseException:
        distributed.shutdown(clean=False)
        raise
    distributed.shutdown()
    # Leave without the interpreter's teardown. In about 3-4 % of runs on this project's
    # machine (torch 2.13, gloo), rank 0 aborted there ("terminate called without an
    # active exception", no Python frame left, a garbage collection after the group's
    # destruction did not help), after its results were saved and its group destroyed.
    # That is torch's exit, not what this worker tests.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
