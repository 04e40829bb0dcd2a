"""Intervals for set metrics from bootstrap replicates, and paired comparisons of samplers.

A set metric (FID, KID, a two-sample distance) is a function of a whole set of N samples
and, for FID and KID, of a reference set of M real samples; its uncertainty is that of
drawing both sets again. The bootstrap draws B index sets of N indices with replacement
(and B of M into the reference) and evaluates the metric on each resample. A plain
interval is the estimate +- z se, se the replicates' standard deviation (the normal
bootstrap interval, Efron & Tibshirani 1993, sec. 13.3; not the percentile interval: a
resampled set repeats samples, which inflates a distance such as FID, so the replicates
sit above the estimate and their percentiles would not contain it).

The interval of a distance. Near a distance of 0 that interval is too wide: FID and KID
are smooth functions of the two sets whose first-order part vanishes where the two
distributions agree, leaving a second-order part of variance q, and the bootstrap
counts q about three times (its linear part is taken at the observed sets, whose error
adds about 2 q; measured 1.7 times the se at a distance of 0, a "95 %" interval covering
99.9 %). Every replicate therefore comes with its linear part l_b
(`harness.metrics.feature_replicates`: the derivative of the metric in the resample's
counts), and the parts are told apart: q = Var(T* - l), the variance of the distance's
estimate where the distance is 0, and v = Var(l), the delta-method variance at the
estimate, which the error of its gradient inflates by about 2 q. The variance of an
estimate grows with the distance it estimates, and the interval follows it, as Wilson's
interval for a proportion does:

* its lower end is the value t below T with T - t = z sqrt(v(t)), v(t) rising linearly
  in the distance from q at the distance 0 (`zero`: the metric's value there, 0 for KID
  and FID_inf, the small-N bias for FID) to max(v - 2 q, q) at the estimate;
* its upper end is T + z sd(T*), the plain bootstrap's: its over-count of q errs on the
  side where a larger distance has a larger variance (and where a low estimate, which
  comes with a low delta-method variance, would leave the truth above a symmetric
  interval).

An estimate at or below its zero gets the lower end T - z sqrt(q).
`benchmarks/interval_calibration.py` measured this against the candidates (bootstrap of
one or both sets, delta method, a second-order corrected variance, m-out-of-n, basic
bootstrap) on the 64-D oracle at N = 512: it alone covers 90-99 % at every distance for
FID and KID alike, and `tests/test_interval_calibration.py` checks that. A metric
recorded without linear parts (a replicated accuracy, or records made before) gets the
plain interval.

What the intervals cover. The reference set is resampled too, so an interval holds the
reference's sampling error as well as the generated samples'. For FID it covers
E[FID_{N,M}], the expected FID of N generated against M reference samples: the value
ranking at equal N compares, biased above the large-N FID (`fid_infinity` estimates
that one); for KID, whose estimator is unbiased, the population squared MMD, >= 0. A
quantity that cannot be below a least value (`minimum`, 0 for both) has the part of its
interval below it cut off, and an estimate below it (KID can be, by noise) is read as
that least value: its interval starts there, never wholly below what the quantity can
take.

Pairing. Sample i of every sampler starts from the same initial noise (seed, i), so two
samplers' sets are paired index by index; every sampler is measured against the same
reference set. The index sets depend only on (N, B) (and (M, B)) and a fixed key, never
on the sampler: replicate b of sampler A and replicate b of sampler B evaluate the same
initial noises against the same reference resample. The differences A_b - B_b give the
plain interval of A - B, free of the variation the two share (a difference is no
distance: its sign is free, and the plain interval was measured to cover 93-97 %); A
and B are tied at level alpha when it contains 0. Several seeds are independent sets
against the one reference: a value over seeds is their mean, and so is each replicate
and its linear part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional, Sequence

import torch
from torch import Tensor

#: Replicates per trial unless a suite says otherwise.
DEFAULT_REPLICATES = 200
DEFAULT_LEVEL = 0.95
#: The index sets' generator keys, of the generated samples and of the reference set:
#: fixed, so that every trial of every suite with the same N (M) resamples the same
#: indices (the pairing above).
INDEX_KEY = 20_111_993
REFERENCE_KEY = 19_930_111
#: A replicated value's linear parts are kept beside its replicates under this suffix,
#: so that every record of replicates carries them without knowing of them.
LINEAR_SUFFIX = ".linear"


def index_sets(n: int, replicates: int, key: int = INDEX_KEY) -> Tensor:
    """(replicates, n) int64 indices in [0, n), drawn with replacement; a function of
    (n, replicates, key) only."""
    if n < 2 or replicates < 1:
        raise ValueError(f"need n >= 2 samples and >= 1 replicate, got {n}, {replicates}")
    generator = torch.Generator().manual_seed(key * 1_000_003 + n)
    return torch.randint(0, n, (replicates, n), generator=generator)


@dataclass
class Bootstrap:
    """The index sets of one trial and the replicates its metrics record against them.

    The runner gives one to every trial (`TrialContext.bootstrap`); a metric that can
    evaluate itself on a subset calls `record(key, [value on samples[idx] for idx in
    bootstrap.index_sets], linear=...)`, resampling its reference set by
    `reference_sets(M)` when it has one. The samples are those of the whole trial, in
    index order.
    """

    n: int
    replicates: int = DEFAULT_REPLICATES
    level: float = DEFAULT_LEVEL
    values: dict[str, list[float]] = field(default_factory=dict)
    linear: dict[str, list[float]] = field(default_factory=dict)
    minimum: dict[str, Optional[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index_sets = index_sets(self.n, self.replicates)

    def reference_sets(self, m: int) -> Tensor:
        """(replicates, m) indices into a reference set of m samples, the same for every
        trial (the reference is shared, so its resamples are paired across rows)."""
        return index_sets(m, self.replicates, REFERENCE_KEY)

    def record(self, key: str, values: Sequence[float], minimum: Optional[float] = None,
               linear: Optional[Sequence[float]] = None) -> None:
        """The replicates of value `key`; `minimum`: the least value the quantity can
        take; `linear`: each replicate's first-order part (see the module docstring)."""
        for what in (values, linear):
            if what is not None and len(what) != self.replicates:
                raise ValueError(f"{key}: {len(what)} replicates, expected "
                                 f"{self.replicates}")
        self.values[key] = [float(v) for v in values]
        self.minimum[key] = minimum
        if linear is not None:
            self.linear[key] = [float(v) for v in linear]

    def recorded(self) -> dict[str, list[float]]:
        """The replicates to store, each value's linear parts beside it."""
        return {**self.values,
                **{key + LINEAR_SUFFIX: parts for key, parts in self.linear.items()}}

    def intervals(self, estimates: dict[str, float]) -> dict[str, float]:
        """`{key}_se`, `{key}_ci_low` and `{key}_ci_high` around each recorded key's
        estimate (the metric's own value in `estimates`; a distance's zero is its
        `minimum` plus its `{key}_bias` there, if any)."""
        out: dict[str, float] = {}
        for key, values in self.values.items():
            linear = self.linear.get(key)
            minimum = self.minimum.get(key)
            zero = None if linear is None else (minimum or 0.0) + estimates.get(
                f"{key}_bias", 0.0)
            out[f"{key}_se"] = standard_error(values)
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = interval(
                estimates[key], values, linear, self.level, minimum, zero)
        return out


def split_recorded(replicates: dict[str, list]) -> tuple[dict[str, list], dict[str, list]]:
    """Stored replicates (`Bootstrap.recorded`) -> (replicates, linear parts) by key."""
    linear = {key[:-len(LINEAR_SUFFIX)]: parts for key, parts in replicates.items()
              if key.endswith(LINEAR_SUFFIX)}
    values = {key: parts for key, parts in replicates.items()
              if not key.endswith(LINEAR_SUFFIX)}
    return values, linear


def standard_error(replicates: Sequence[float]) -> float:
    """The standard deviation of the replicates (ddof 1); NaN if any is not finite."""
    data = torch.as_tensor(list(replicates), dtype=torch.float64)
    if data.numel() < 2 or not bool(torch.isfinite(data).all()):
        return math.nan
    return float(data.std())


@dataclass(frozen=True)
class Spread:
    """A distance's variances from its replicates T* and their linear parts l."""

    #: Var(T*): the plain bootstrap's.
    total: float
    #: Var(l): the delta-method variance at the estimate.
    linear: float
    #: Var(T* - l): the second-order part, the variance at a distance of 0.
    second_order: float

    @classmethod
    def of(cls, replicates: Sequence[float], linear: Sequence[float]) -> "Spread":
        values = torch.as_tensor(list(replicates), dtype=torch.float64)
        parts = torch.as_tensor(list(linear), dtype=torch.float64)
        if (values.numel() < 2 or parts.shape != values.shape
                or not bool(torch.isfinite(values).all() & torch.isfinite(parts).all())):
            return cls(math.nan, math.nan, math.nan)
        return cls(float(values.var()), float(parts.var()), float((values - parts).var()))


def _z(level: float) -> float:
    return NormalDist().inv_cdf((1 + level) / 2)


def _at_least(estimate: float, minimum: Optional[float]) -> float:
    """An estimate below the least value its quantity can take, read as that value."""
    return estimate if minimum is None or not estimate < minimum else minimum


def _cut(low: float, high: float, minimum: Optional[float]) -> tuple[float, float]:
    return (low if minimum is None else max(low, minimum)), high


def normal_interval(estimate: float, replicates: Sequence[float],
                    level: float = DEFAULT_LEVEL, minimum: Optional[float] = None
                    ) -> tuple[float, float]:
    """estimate +- z_{(1+level)/2} se, se the replicates' standard deviation; an
    estimate below `minimum` is read as it, and the interval is cut there."""
    half = _z(level) * standard_error(replicates)
    centre = _at_least(estimate, minimum)
    return _cut(centre - half, centre + half, minimum)


def distance_interval(estimate: float, spread: Spread, zero: float,
                      level: float = DEFAULT_LEVEL, minimum: Optional[float] = None
                      ) -> tuple[float, float]:
    """The interval of a distance whose value at a distance of 0 is `zero` (module
    docstring); an estimate below `minimum` is read as it, and the interval is cut
    there."""
    z, q = _z(level), spread.second_order
    if math.isnan(q):
        return math.nan, math.nan
    estimate = _at_least(estimate, minimum)
    distance = estimate - zero
    above = z * math.sqrt(max(spread.total, q))
    below = z * math.sqrt(q)
    if distance > 0:
        at_estimate = max(spread.linear - 2 * q, q)
        # (T - t)^2 = z^2 (at_estimate - slope (T - t)), t in [zero, T]: quadratic in T - t.
        slope = (at_estimate - q) / distance
        half_slope = z * z * slope / 2
        rising = math.sqrt(half_slope**2 + z * z * at_estimate) - half_slope
        if rising <= distance:  # else t is below the zero, where the variance is q
            below = rising
    return _cut(estimate - below, estimate + above, minimum)


def interval(estimate: float, replicates: Sequence[float],
             linear: Optional[Sequence[float]] = None, level: float = DEFAULT_LEVEL,
             minimum: Optional[float] = None, zero: Optional[float] = None
             ) -> tuple[float, float]:
    """The interval of a recorded value: a distance's (`distance_interval`, its zero
    `zero`, else `minimum`, else 0) when it has linear parts, else the plain one."""
    if linear is None:
        return normal_interval(estimate, replicates, level, minimum)
    if zero is None:
        zero = 0.0 if minimum is None else minimum
    return distance_interval(estimate, Spread.of(replicates, linear), zero, level, minimum)


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
