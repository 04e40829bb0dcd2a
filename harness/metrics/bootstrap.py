"""Bootstrap intervals for set metrics, and paired comparisons between samplers.

A set metric (FID, KID, a two-sample distance) is a function of a whole set of N samples;
its uncertainty is that of drawing another set. The bootstrap draws B index sets I_b of N
indices with replacement and evaluates the metric on each: the spread of the B replicates
estimates the metric's standard error, and the interval is the estimate +- z se (the
normal bootstrap interval, Efron & Tibshirani 1993, sec. 13.3). Not the percentile
interval: a resampled set repeats samples, which inflates a distance such as FID, so the
replicates sit above the estimate at small N and their percentiles would not contain it.
A metric that cannot be negative records its replicates with `minimum=0`, and its lower
bound is clipped there rather than printed below what the metric can take.

Pairing. Sample i of every sampler starts from the same initial noise (seed, i), so two
samplers' sets are paired index by index. The index sets depend only on (N, B) and a
fixed key, never on the sampler: replicate b of sampler A and replicate b of sampler B
evaluate the same initial noises. The differences A_b - B_b are a paired bootstrap of
A - B, free of the variation the two share (and of most of the resampling inflation,
which both suffer alike); A and B are called tied at level alpha when the interval of
the difference contains 0 (a two-sided test). Several seeds are independent sets: a
value over seeds is their mean, and so is each replicate.

A resampled set repeats some samples. Plug-in statistics (a mean, a covariance, FID) take
the repeats as weights, as the bootstrap intends; U-statistics (KID, the unbiased MMD)
must leave out the pairs of a sample with its own copy, or a repeat would count as a
perfect match (`distinct_pairs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional, Sequence

import torch
from torch import Tensor

#: Replicates per trial unless a suite says otherwise (a 95 % percentile interval from
#: 200 replicates moves by a few % of its width between bootstrap keys).
DEFAULT_REPLICATES = 200
DEFAULT_LEVEL = 0.95
#: The index sets' generator key: fixed, so that every trial of every suite with the same
#: N resamples the same sample indices (the pairing above).
INDEX_KEY = 20_111_993


def index_sets(n: int, replicates: int, key: int = INDEX_KEY) -> Tensor:
    """(replicates, n) int64 indices in [0, n), drawn with replacement; a function of
    (n, replicates, key) only."""
    if n < 2 or replicates < 1:
        raise ValueError(f"need n >= 2 samples and >= 1 replicate, got {n}, {replicates}")
    generator = torch.Generator().manual_seed(key * 1_000_003 + n)
    return torch.randint(0, n, (replicates, n), generator=generator)


def distinct_pairs(indices: Tensor) -> Tensor:
    """(n, n) bool: the pairs (j, k) of a resampled set that are two different samples."""
    return indices[:, None] != indices[None, :]


@dataclass
class Bootstrap:
    """The index sets of one trial and the replicates its metrics record against them.

    The runner gives one to every trial (`TrialContext.bootstrap`); a metric that can
    evaluate itself on a subset calls `record(key, [value on samples[idx] for idx in
    bootstrap.index_sets])`. The samples are those of the whole trial, in index order.
    """

    n: int
    replicates: int = DEFAULT_REPLICATES
    level: float = DEFAULT_LEVEL
    values: dict[str, list[float]] = field(default_factory=dict)
    minimum: dict[str, Optional[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index_sets = index_sets(self.n, self.replicates)

    def record(self, key: str, values: Sequence[float],
               minimum: Optional[float] = None) -> None:
        """The replicates of value `key`; `minimum`: the least value it can take."""
        if len(values) != self.replicates:
            raise ValueError(f"{key}: {len(values)} replicates, expected {self.replicates}")
        self.values[key] = [float(v) for v in values]
        self.minimum[key] = minimum

    def intervals(self, estimates: dict[str, float]) -> dict[str, float]:
        """`{key}_se`, `{key}_ci_low` and `{key}_ci_high` around each recorded key's
        estimate (the metric's own value in `estimates`)."""
        out: dict[str, float] = {}
        for key, values in self.values.items():
            low, high = normal_interval(estimates[key], values, self.level,
                                        self.minimum.get(key))
            out[f"{key}_se"] = standard_error(values)
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
        return out


def standard_error(replicates: Sequence[float]) -> float:
    """The standard deviation of the replicates (ddof 1); NaN if any is not finite."""
    data = torch.tensor(list(replicates), dtype=torch.float64)
    if data.numel() < 2 or not bool(torch.isfinite(data).all()):
        return math.nan
    return float(data.std())


def normal_interval(estimate: float, replicates: Sequence[float],
                    level: float = DEFAULT_LEVEL, minimum: Optional[float] = None
                    ) -> tuple[float, float]:
    """estimate +- z_{(1+level)/2} se, the lower bound clipped at `minimum`."""
    half = NormalDist().inv_cdf((1 + level) / 2) * standard_error(replicates)
    low, high = estimate - half, estimate + half
    if minimum is not None and not math.isnan(low):
        low = max(low, minimum)
    return low, high


def mean_over_seeds(per_seed: Sequence[Sequence[float]]) -> list[float]:
    """Replicate b of a value averaged over independent seeds: the mean of their b-th."""
    lengths = {len(r) for r in per_seed}
    if len(lengths) != 1:
        raise ValueError(f"replicate counts differ between seeds: {sorted(lengths)}")
    return torch.tensor([list(r) for r in per_seed], dtype=torch.float64).mean(0).tolist()


@dataclass(frozen=True)
class Comparison:
    """A - B from paired replicates: the observed difference and its interval."""

    difference: float
    low: float
    high: float
    level: float

    @property
    def tied(self) -> bool:
        """No difference at this level: the interval contains 0 (or is undefined)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return True
        return self.low <= 0.0 <= self.high


def paired_comparison(observed_a: float, observed_b: float, replicates_a: Sequence[float],
                      replicates_b: Sequence[float], level: float = DEFAULT_LEVEL
                      ) -> Comparison:
    """Compare A and B measured on the same index sets (see the module docstring)."""
    if len(replicates_a) != len(replicates_b):
        raise ValueError("paired replicates must come from the same index sets")
    differences = [a - b for a, b in zip(replicates_a, replicates_b)]
    low, high = normal_interval(observed_a - observed_b, differences, level)
    return Comparison(observed_a - observed_b, low, high, level)
