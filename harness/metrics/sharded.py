"""FID and NLL over torchrun ranks, combined without approximation.

* FID: each rank sums its features x and x x^T in float64 with its count; the sums are
  all-reduced and the Frechet distance is computed from the combined moments with
  `harness.metrics.fid`'s own formulas (`ReferenceStats.mean/cov`, `frechet_distance`), which
  are those of the torchmetrics state that `fid.FID` keeps. Summing moments is simpler
  than syncing torchmetrics' states and makes the float64 accumulation explicit.
* NLL: each rank solves for its own test points with `likelihood.ode_nll`, with no
  collective inside the adaptive solver (ranks make different numbers of calls, and a
  collective there would hang); the per-point values are gathered afterwards and the
  summary is recomputed from all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..core.distributed import (
    all_reduce_max,
    all_reduce_sum,
    gather_concat,
    shard,
    shared_failure,
    world_size,
)
from ..errors import ParameterError
from .fid import ReferenceStats, frechet_distance
from .likelihood import NLLResult, _result, ode_nll
from ..core.model import ScoreModel


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
        """As `harness.metrics.fid.ReferenceStats`, whose `mean` and `cov` give the FID inputs."""
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
    pass e.g. `functools.partial(ode_nll, model, solver="rk4", options=...)` for a
    fixed-step solve. Each rank solves for its own points (`shard`), with no collective
    inside the solver; the per-point values are then gathered in the original order and
    summarised as one process would. Point i draws from stream (seed, indices[i]), so a
    point's value does not depend on the rank that computes it. With an adaptive solver it
    depends on its batch-mates at the level of the tolerance (see `ode_nll`): for values
    identical to a single process use `batch_size=1`, or a fixed-step solver.
    """
    solve = solve or functools.partial(ode_nll, model)
    indices = list(range(data.shape[0])) if indices is None else [int(i) for i in indices]
    if len(indices) < world_size():
        raise ParameterError(f"{len(indices)} test points cannot be shared by "
                             f"{world_size()} ranks")
    positions = shard(range(len(indices)))
    with shared_failure():  # an adaptive solve that fails on one rank fails on all
        local = solve(data[positions], indices=[indices[p] for p in positions], **options)
    values = gather_concat(local.values.double())
    nfe_rows = all_reduce_sum(torch.tensor([local.nfe_mean * len(positions)]))
    # The summary (mean, standard errors) from every point, by likelihood's own code.
    return _result(values, model=model, method=local.method, probe=local.probe or "",
                   eps=local.eps, solver=local.solver, rtol=local.rtol, atol=local.atol,
                   nfe=(float(nfe_rows) / len(indices), all_reduce_max(local.nfe_max)),
                   seed=local.seed)
