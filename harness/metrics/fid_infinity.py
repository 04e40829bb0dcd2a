"""FID_inf: FID extrapolated to infinitely many samples (Chong & Forsyth 2020).

FID of N generated against M reference samples is biased upward, by about a / N + b / M
(the sampling noise of each set's mean and covariance adds to the distance), so values
at different N, or against references of different sizes, cannot be compared. Chong &
Forsyth ("Effectively Unbiased FID and Inception Score and where to find them", CVPR
2020, sec. 3) compute FID on subsets of several sizes, fit a line in 1/N and take its
intercept: the FID of infinitely many samples. Here both sets are subsampled, by the same
fraction f, so that the bias (a / N + b / M) / f is linear in 1/f and the intercept
removes both sets' shares:

    FID(f) ~ FID_inf + beta / f,   f in FRACTIONS,

with FID(f) the mean over `draws` random subset pairs (f = 1 is the whole sets; draw r
at every fraction takes the first f N of one permutation, so its subsets are nested).
The subsets come from a generator with a fixed key, a function of (N, M) only, so every
sampler of a suite is extrapolated through the same sample indices (paired, as the
bootstrap's index sets are). The slope beta is FID's own small-N bias at (N, M).

What it estimates and how precisely. FID_inf is the population FID between the two
distributions' feature Gaussians, the value a larger N converges to, in this feature
space (not a paper's 50k FID with Inception features). Its sampling variation is FID's,
less that of the bias beta, which varies far less, plus the subsets' own noise (3.5 % of
FID's standard deviation at 32 draws, measured on the 64-D oracle at N = M = 512): its
interval is made from FID's replicates moved to FID_inf, as a distance's
(`harness.metrics.bootstrap`), and covers the population FID in 91-98 % of draws
(`tests/test_fid_infinity.py`, `benchmarks/interval_calibration.py`). On that oracle
FID_N is 1.1-1.4 above the population FID, FID_inf within 0.06 of it.

Where it fails. The 1/N law needs subsets well above the feature dimension F (the
oracle's smallest are 4 F). On the digits suites (F = 64, 355 reference digits, the
smallest subsets 178) real held-out digits get FID_inf -3 to -8, not 0: FID's bias grows
faster than 1/N there, and FID_inf is not to be trusted (its `data` row shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ParameterError
from .feature_replicates import counts, frechet_weighted

#: Subset fractions of both sets (f = 1: the whole sets) and subset pairs drawn at each.
FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)
#: 8 draws left FID_inf 10 % more variable than FID on the 64-D oracle at N = 512, 32
#: draws 3.5 % (the subsets' own noise); each costs one FID of a subset.
DRAWS = 32
#: The subsets' generator key: fixed, so that every trial with the same (N, M) draws the
#: same subsets.
SUBSET_KEY = 20_200_614


@dataclass(frozen=True)
class FIDInfinity:
    """FID_inf, the fit's slope beta (FID's small-N bias at f = 1, these N and M), and
    the points it was fitted to."""

    value: float
    slope: float
    fractions: tuple[float, ...]
    fids: tuple[float, ...]
    #: Subset pairs drawn at each fraction below 1.
    draws: int


def subset_counts(n: int, fraction: float, draws: int, key: int) -> Tensor:
    """(draws, n) 0/1 float64 weights: `draws` random subsets of round(fraction n) of n."""
    size = max(2, round(fraction * n))
    generator = torch.Generator().manual_seed(key * 1_000_003 + n)
    chosen = torch.stack([torch.randperm(n, generator=generator)[:size]
                          for _ in range(draws)])
    return counts(chosen, n)


def fid_infinity(features: Tensor, reference: Tensor,
                 fractions: tuple[float, ...] = FRACTIONS, draws: int = DRAWS,
                 key: int = SUBSET_KEY) -> FIDInfinity:
    """FID_inf of `features` (N, F) against `reference` (M, F) (module docstring)."""
    if (len(set(fractions)) < 2 or any(not 0 < f <= 1 for f in fractions)
            or int(draws) < 1):
        raise ParameterError(f"FID_inf needs two or more fractions in (0, 1] and "
                             f"draws >= 1, got fractions {list(fractions)}, draws {draws}")
    fractions = tuple(float(f) for f in fractions)
    x, y = features.double(), reference.double()
    fids = []
    for fraction in fractions:
        repeats = 1 if fraction == 1.0 else draws
        c = subset_counts(x.shape[0], fraction, repeats, key)
        d = subset_counts(y.shape[0], fraction, repeats, key + 1)
        fids.append(float(frechet_weighted(x, c, y, d).mean()))
    inverse = torch.tensor([1.0 / f for f in fractions], dtype=torch.float64)
    design = torch.stack([torch.ones_like(inverse), inverse], dim=1)
    intercept, slope = torch.linalg.lstsq(design, torch.tensor(fids, dtype=torch.float64)
                                          [:, None]).solution[:, 0].tolist()
    return FIDInfinity(intercept, slope, tuple(fractions), tuple(fids), draws)
