"""Sharding a run over processes launched by torchrun: a few small functions.

In the spirit of EDM's `torch_utils/distributed.py`: `init()` reads torchrun's environment
(gloo on the CPU, NCCL on CUDA) and is a no-op for a single process, so the same code runs
with and without torchrun. Sample indices are strided over ranks (`indices[rank::world]`);
since sample i depends only on (seed, i) (`harness.noise`), a sharded run draws exactly the
samples one process would, and `gather_concat` puts them back in index order.

Metrics combine without approximation:

* FID: each rank sums its features x and x x^T in float64 with its count; the sums are
  all-reduced and the Frechet distance is computed from the combined moments with
  `harness.fid`'s own formulas (`ReferenceStats.mean/cov`, `frechet_distance`), which
  are those of the torchmetrics state that `fid.FID` keeps. Summing moments is simpler
  than syncing torchmetrics' states and makes the float64 accumulation explicit.
* NLL: each rank solves for its own test points with `likelihood.ode_nll`, with no
  collective inside the adaptive solver (ranks make different numbers of calls, and a
  collective there would hang); the per-point values are gathered afterwards and the
  summary is recomputed from all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import ParameterError
from .fid import ReferenceStats, frechet_distance
from .likelihood import NLLResult, _result, ode_nll
from .model import ScoreModel

T = TypeVar("T")


# --- the process group --------------------------------------------------------------------

def init(backend: Optional[str] = None, timeout_s: float = 1800.0) -> None:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...).

    NCCL when CUDA is available (each rank on GPU LOCAL_RANK), else gloo. Without
    torchrun's variables, or with a world of one, nothing is initialised.
    """
    if dist.is_initialized() or not launched():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout_s))


def launched() -> bool:
    """Whether torchrun started this process as one of several (before or after `init`)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device(requested: str = "auto") -> torch.device:
    """This rank's device: `cuda:LOCAL_RANK` when CUDA is asked for (or `auto` finds it)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return torch.device("cuda", local_rank())
    return torch.device(requested)


def print0(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only."""
    if rank() == 0:
        print(*args, **kwargs)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (at the end of a run); a no-op for a single process."""
    if is_distributed():
        dist.destroy_process_group()


# --- sharding and collectives -----------------------------------------------------------------

def shard(indices: Sequence[T]) -> list[T]:
    """This rank's share of `indices`: every world_size-th one, starting at its rank."""
    return list(indices)[rank()::world_size()]


def local_rows(tensor: Tensor) -> Tensor:
    """This rank's rows of a tensor whose row i belongs to index i (its `shard`)."""
    return tensor[rank()::world_size()]


def _comm_device() -> torch.device:
    """Where collectives run: the rank's GPU for NCCL, the CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum over ranks of `tensor`, in float64, on `tensor`'s device (a new tensor)."""
    total = tensor.detach().to(device=_comm_device(), dtype=torch.float64).clone()
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def all_reduce_max(value: float) -> float:
    """The largest of each rank's `value`."""
    total = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return float(total)


def broadcast_object(value: T) -> T:
    """Rank 0's `value` on every rank (picklable; e.g. the trials left after --resume,
    which only rank 0 reads from MLflow)."""
    if not is_distributed():
        return value
    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]  # type: ignore[return-value]


def on_rank0(work: Callable[[], T]) -> T:
    """`work()` run on rank 0 only (e.g. talking to MLflow); its result, or the exception
    it raised, on every rank, so that no rank waits for one that has already given up."""
    if not is_distributed():
        return work()
    outcome: Optional[tuple[bool, Any]] = None
    if rank() == 0:
        try:
            outcome = (True, work())
        except Exception as err:  # re-raised below, on every rank
            outcome = (False, err)
    ok, value = broadcast_object(outcome)  # type: ignore[misc]
    if not ok:
        raise value
    return value


class FailedOnAnotherRank(Exception):
    """Raised on the ranks that did not fail when another one did."""


@contextlib.contextmanager
def shared_failure() -> Iterator[None]:
    """If the block raises on any rank, it raises on every rank (the others raise
    `FailedOnAnotherRank`, naming the rank and its error).

    Wrap work that can fail on one rank and not another (a sampler that returns NaN for
    some sample indices only) before the next collective: a rank that went on alone
    would wait for the others forever. One small collective, even when nothing failed.
    """
    error: Optional[Exception] = None
    try:
        yield
    except Exception as err:  # re-raised below, after every rank has said how it went
        error = err
    if is_distributed():
        message = None if error is None else f"{type(error).__name__}: {error}"
        reports: list[Optional[str]] = [None] * world_size()
        dist.all_gather_object(reports, message)
        failed = [(r, m) for r, m in enumerate(reports) if m is not None]
        if error is None and failed:
            raise FailedOnAnotherRank("; ".join(f"rank {r}: {m}" for r, m in failed))
    if error is not None:
        raise error


def gather_concat(tensor: Tensor) -> Tensor:
    """Every rank's rows, interleaved back into the order of the indices they came from.

    Rank r holds the rows of indices[r::world] (`shard`); the result, on every rank, holds
    row i of the unsharded run at position i. Ranks may hold one row more or less; the
    trailing shape and dtype must agree.
    """
    if not is_distributed():
        return tensor
    world, comm = world_size(), _comm_device()
    local = tensor.detach().to(comm).contiguous()
    sizes = [torch.zeros(1, dtype=torch.int64, device=comm) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=comm))
    counts = [int(s) for s in sizes]
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((sum(counts), *local.shape[1:]))
    for r, (part, count) in enumerate(zip(parts, counts)):
        out[r::world] = part[:count]
    return out.to(tensor.device)


# --- FID from moments summed over ranks --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FeatureMoments:
    """n, sum of x and sum of x x^T (float64) of a set of features: what FID needs."""

    n: int
    features_sum: Tensor
    features_cov_sum: Tensor

    @classmethod
    def of(cls, features: Tensor) -> "FeatureMoments":
        x = features.detach().flatten(1).double()
        return cls(x.shape[0], x.sum(0), x.T @ x)

    def all_reduce(self) -> "FeatureMoments":
        """The moments of the union of every rank's features (one collective)."""
        dim = self.features_sum.numel()
        packed = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64,
                                         device=self.features_sum.device),
                            self.features_sum, self.features_cov_sum.flatten()])
        total = all_reduce_sum(packed)
        return FeatureMoments(int(round(float(total[0]))), total[1:1 + dim],
                              total[1 + dim:].reshape(dim, dim))

    def as_stats(self, extractor_sha256: str = "") -> ReferenceStats:
        """As `harness.fid.ReferenceStats`, whose `mean` and `cov` give the FID inputs."""
        return ReferenceStats("samples", extractor_sha256, self.n, self.features_sum,
                              self.features_cov_sum)


def sharded_fid(features: Tensor, reference: ReferenceStats) -> tuple[float, int]:
    """FID of the samples whose features are spread over the ranks (each rank passes its
    own), against `reference`; (value, total N), the same on every rank."""
    samples = FeatureMoments.of(features).all_reduce().as_stats()
    if samples.n < 2:
        raise ValueError("FID needs at least two samples over all ranks")
    value = frechet_distance(reference.mean.cpu(), reference.cov.cpu(),
                             samples.mean.cpu(), samples.cov.cpu())
    return value, samples.n


# --- NLL per rank, gathered -------------------------------------------------------------------

def sharded_nll(model: ScoreModel, data: Tensor, indices: Optional[Sequence[int]] = None,
                solve: Optional[Callable[..., NLLResult]] = None, **options: Any) -> NLLResult:
    """An NLL of test points `data` (N, ...) computed in shards over the ranks.

    `solve(data, indices=..., **options)` is `likelihood.ode_nll` for `model` by default;
    pass e.g. `functools.partial(discretised_flow_nll, model, sampler, grid)` for a
    sampler's own flow. Each rank solves for its own points (`shard`), with no collective
    inside the solver; the per-point values are then gathered in the original order and
    summarised as one process would. Point i draws from stream (seed, indices[i]), so a
    point's value does not depend on the rank that computes it. With an adaptive solver it
    depends on its batch-mates at the level of the tolerance (see `ode_nll`): for values
    identical to a single process use `batch_size=1`, or a fixed-grid flow.
    """
    solve = solve or functools.partial(ode_nll, model)
    indices = list(range(data.shape[0])) if indices is None else [int(i) for i in indices]
    if len(indices) < world_size():
        raise ParameterError(f"{len(indices)} test points cannot be shared by "
                             f"{world_size()} ranks")
    positions = shard(range(len(indices)))
    local = solve(data[positions], indices=[indices[p] for p in positions], **options)
    values = gather_concat(local.values.double())
    nfe_rows = all_reduce_sum(torch.tensor([local.nfe_mean * len(positions)]))
    # The summary (mean, standard errors) from every point, by likelihood's own code.
    return _result(values, model=model, method=local.method, probe=local.probe or "",
                   eps=local.eps, solver=local.solver, rtol=local.rtol, atol=local.atol,
                   nfe=(float(nfe_rows) / len(indices), all_reduce_max(local.nfe_max)),
                   seed=local.seed)
