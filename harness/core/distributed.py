"""Sharding a run over processes launched by torchrun: a few small functions.

In the spirit of EDM's `torch_utils/distributed.py`: `init()` reads torchrun's environment
(gloo on the CPU, NCCL on CUDA) and is a no-op for a single process, so the same code runs
with and without torchrun. Sample indices are strided over ranks (`indices[rank::world]`);
since sample i depends only on (seed, i) (`harness.core.noise`), a sharded run draws exactly the
samples one process would, and `gather_concat` puts them back in index order.

Collectives of CPU data (gathered samples, Python objects) go through a gloo group even
when the default group is NCCL, so that they never take GPU memory. How FID and the NLL
combine over ranks is in `harness.metrics.sharded`.

Every rank must reach every collective. Work that can fail on one rank and not another
runs inside `shared_failure()`, which makes every rank raise if any did; work only rank 0
does (talking to MLflow) goes through `on_rank0()`, which hands its result or error to all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import HarnessError

T = TypeVar("T")


# --- the process group --------------------------------------------------------------------

def init(backend: Optional[str] = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...);
    True if this call created it (and `shutdown` should end it).

    NCCL when CUDA is available (each rank on GPU LOCAL_RANK), else gloo. Without
    torchrun's variables, with a world of one, or with a group already there (a caller
    that manages its own), nothing is initialised.
    """
    if dist.is_initialized() or not launched():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return True


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


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for absent CUDA is an error.

    Under torchrun each process takes the GPU of its LOCAL_RANK, so a fixed `cuda:N`
    (which every process would share) is refused there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r} requested but CUDA is not available here; "
                         f"use --device cpu or auto")
    if device.type == "cuda" and launched():
        if device.index is not None:
            raise HarnessError(f"device {name!r}: under torchrun every process uses the GPU "
                             f"of its LOCAL_RANK; give --device cuda (or auto)")
        device = torch.device("cuda", local_rank())
    return device


def print0(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only."""
    if rank() == 0:
        print(*args, **kwargs)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown(clean: bool = True) -> None:
    """Leave the process group (at the end of a run); a no-op for a single process.

    After a clean run every rank waits for the others first: a rank that tears its
    group down while a peer is still finishing (writing a file after the last
    collective) can make gloo abort the slower process at exit, which once failed a
    clean two-process run. A rank leaving on an error does not wait: its peers may
    never reach the barrier.
    """
    global _CPU_GROUP
    if is_distributed():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    _CPU_GROUP = None


# --- sharding and collectives -----------------------------------------------------------------

def shard(indices: Sequence[T]) -> list[T]:
    """This rank's share of `indices`: every world_size-th one, starting at its rank."""
    return list(indices)[rank()::world_size()]


def local_rows(tensor: Tensor) -> Tensor:
    """This rank's rows of a tensor whose row i belongs to index i (its `shard`)."""
    return tensor[rank()::world_size()]


_CPU_GROUP: Optional[Any] = None


def _cpu_group() -> Any:
    """A gloo group over every rank, for collectives of CPU data (the default group when
    it is gloo already; created once, collectively, on first use)."""
    global _CPU_GROUP
    if dist.get_backend() == "gloo":
        return None  # the default group
    if _CPU_GROUP is None:
        _CPU_GROUP = dist.new_group(backend="gloo")
    return _CPU_GROUP


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
    dist.broadcast_object_list(box, src=0, group=_cpu_group())
    return box[0]  # type: ignore[return-value]


def gather_objects(value: T) -> list[T]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not is_distributed():
        return [value]
    every: list[Any] = [None] * world_size()
    dist.all_gather_object(every, value, group=_cpu_group())
    return every


def on_rank0(work: Callable[[], T]) -> T:
    """`work()` run on rank 0 only (e.g. talking to MLflow); its result on every rank.

    If it raises, rank 0 re-raises its exception and every other rank raises
    `FailedOnAnotherRank` with its message, so that no rank waits for one that has given
    up. The result must pickle; the exception need not.
    """
    if not is_distributed():
        return work()
    outcome: Optional[tuple[bool, Any]] = None
    error: Optional[Exception] = None
    if rank() == 0:
        try:
            outcome = (True, work())
        except Exception as err:  # re-raised below, once the others know
            error = err
            outcome = (False, f"{type(err).__name__}: {err}")
    ok, value = broadcast_object(outcome)  # type: ignore[misc]
    if error is not None:
        raise error
    if not ok:
        raise FailedOnAnotherRank(f"rank 0: {value}")
    return value


class FailedOnAnotherRank(HarnessError):
    """Raised on the ranks that did not fail when another one did (reported like any
    other harness error: one line, no traceback)."""


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
        dist.all_gather_object(reports, message, group=_cpu_group())
        failed = [(r, m) for r, m in enumerate(reports) if m is not None]
        if error is None and failed:
            raise FailedOnAnotherRank("; ".join(f"rank {r}: {m}" for r, m in failed))
    if error is not None:
        raise error


def gather_concat(tensor: Tensor) -> Tensor:
    """Every rank's rows, interleaved back into the order of the indices they came from.

    Rank r holds the rows of indices[r::world] (`shard`); the result, on every rank, holds
    row i of the unsharded run at position i. Ranks may hold one row more or less; the
    trailing shape and dtype must agree. Gathered on the CPU (gloo), so with NCCL no GPU
    holds the whole set; the result is on `tensor`'s device.
    """
    if not is_distributed():
        return tensor
    world, group = world_size(), _cpu_group()
    local = tensor.detach().cpu().contiguous()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64), group=group)
    counts = [int(s) for s in sizes]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    out = local.new_empty((sum(counts), *local.shape[1:]))
    for r, (part, count) in enumerate(zip(parts, counts)):
        out[r::world] = part[:count]
    return out.to(tensor.device)
