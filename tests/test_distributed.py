"""Sharding with torchrun gives what one process gives: same samples, FID and NLL.

`tests/distributed_worker.py` runs under `torchrun --standalone --nproc_per_node=2`
(gloo on the CPU) and in this process as a single rank; the helpers of
`harness.core.distributed` are also checked on their own for a single process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.core import distributed
from harness.metrics import sharded as sharded_metrics
from harness.metrics.fid import FID, IdentityFeatures, ReferenceStats, frechet_distance

from . import distributed_worker

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_LIMIT_S = 240  # generous: the machine is shared; it normally takes ~15 s


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("torchrun") / "results.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(ROOT / "tests" / "distributed_worker.py"),
               "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_LIMIT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one_rank() -> dict:
    return distributed_worker.run()


def test_two_ranks_ran_with_strided_shards(two_ranks, one_rank):
    assert two_ranks["world_size"] == 2 and one_rank["world_size"] == 1
    assert two_ranks["shard"] == list(range(0, distributed_worker.NUM_SAMPLES, 2))
    assert two_ranks["ranks_with_rank0_object"] == 2  # broadcast_object reached rank 1


def test_same_samples_in_the_same_order(two_ranks, one_rank):
    assert two_ranks["samples"].shape == (distributed_worker.NUM_SAMPLES, 2)
    torch.testing.assert_close(two_ranks["samples"], one_rank["samples"], rtol=0, atol=1e-12)


def test_same_fid_from_moments_summed_over_ranks(two_ranks, one_rank):
    assert two_ranks["fid_n"] == one_rank["fid_n"] == distributed_worker.NUM_SAMPLES
    assert two_ranks["fid"] == pytest.approx(one_rank["fid"], rel=1e-9, abs=1e-12)


def test_single_process_moments_fid_equals_torchmetrics_fid(one_rank):
    """The moments path is the metric `harness.metrics.fid.FID` computes, not another formula."""
    features = IdentityFeatures(2)
    gen = torch.Generator().manual_seed(0)
    from harness.models.oracle import ring_2d
    from harness.core.sde import make_sde

    model = ring_2d(make_sde("vp"))
    reference = features(model.sample_clean(500, generator=gen))
    stats = ReferenceStats("ring-2d:reference", features.sha256, reference.shape[0],
                           reference.sum(0), reference.T @ reference)
    value, n = FID(features, stats)(one_rank["samples"])
    assert n == distributed_worker.NUM_SAMPLES
    assert one_rank["fid"] == pytest.approx(value, rel=1e-9)


def test_same_nll_gathered_from_per_rank_solves(two_ranks, one_rank):
    assert two_ranks["nll_values"].shape == (distributed_worker.NUM_POINTS, 1)
    torch.testing.assert_close(two_ranks["nll_values"], one_rank["nll_values"],
                               rtol=1e-12, atol=1e-12)
    assert two_ranks["nll_nats"] == pytest.approx(one_rank["nll_nats"], rel=1e-12)
    assert two_ranks["nll_stderr"] == pytest.approx(one_rank["nll_stderr"], rel=1e-9)
    assert two_ranks["nll_nfe_mean"] == pytest.approx(one_rank["nll_nfe_mean"])
    assert two_ranks["nll_nfe_max"] == one_rank["nll_nfe_max"]


def test_same_nll_with_a_custom_solve(two_ranks, one_rank):
    """A fixed-step solve (RK4, step 0.05), whole shards per batch: still the same."""
    torch.testing.assert_close(two_ranks["flow_values"], one_rank["flow_values"],
                               rtol=1e-12, atol=1e-12)
    assert two_ranks["flow_nfe_mean"] == one_rank["flow_nfe_mean"] == 4 * 20


def test_a_failure_on_one_rank_reaches_every_rank(two_ranks, one_rank):
    """No rank is left waiting in a collective: each raises, naming the rank that failed."""
    assert one_rank["failures"] == [{
        "shared_failure": "ValueError: only here",
        "on_rank0": "Unpicklable: cannot be pickled",
        "sharded_nll": "FloatingPointError: underflow in dt"}]
    rank0, rank1 = two_ranks["failures"]
    assert rank0 == {
        "shared_failure": "FailedOnAnotherRank: rank 1: ValueError: only here",
        "on_rank0": "Unpicklable: cannot be pickled",
        "sharded_nll": "FailedOnAnotherRank: rank 1: FloatingPointError: underflow in dt"}
    assert rank1 == {
        "shared_failure": "ValueError: only here",
        "on_rank0": "FailedOnAnotherRank: rank 0: Unpicklable: cannot be pickled",
        "sharded_nll": "FloatingPointError: underflow in dt"}


def test_single_process_helpers_are_identities():
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.shard(range(5)) == [0, 1, 2, 3, 4]
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_concat(x) is x
    total = distributed.all_reduce_sum(x.float())
    assert total.dtype == torch.float64 and torch.equal(total, x.double())


def test_feature_moments_give_torchmetrics_mean_and_covariance():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = sharded_metrics.FeatureMoments.of(x).as_stats()
    torch.testing.assert_close(stats.mean, x.mean(0))
    torch.testing.assert_close(stats.cov, torch.cov(x.T))
    assert frechet_distance(stats.mean, stats.cov, stats.mean, stats.cov) == pytest.approx(
        0.0, abs=1e-10)
