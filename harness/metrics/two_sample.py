"""Two-sample distances between sample sets: MMD and the sliced Wasserstein distance.

Used where exact samples of the target exist (the Gaussian-mixture oracles), so that a
sampler's output can be compared with the distribution it should produce, not only with
statistics of features.

* MMD^2 (Gretton et al. 2012, Eq. 3): the unbiased U-statistic with the Gaussian kernel
  k(x, y) = exp(-|x - y|^2 / (2 h^2)); h is fixed or chosen by the median heuristic
  (the median pairwise distance of the pooled samples, Gretton et al. 2012, Sec. 8).
* Sliced Wasserstein (Rabin et al. 2011; Bonneel et al. 2015):
  SW_p(P, Q) = (E_theta W_p^p(theta#P, theta#Q))^(1/p) over directions theta uniform on
  the sphere, estimated with a fixed, seeded set of directions; each 1-D W_p is exact
  for the empirical distributions (sorted samples; different sizes allowed).

Both are computed in float64 and blockwise, so memory stays O(block x N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

MEDIAN_SUBSET = 2000


@dataclass(frozen=True)
class MMDResult:
    """Unbiased MMD^2 with the Gaussian kernel of bandwidth `bandwidth` (can be < 0)."""

    mmd2: float
    bandwidth: float
    n_x: int
    n_y: int
    median_heuristic: bool


def _flat(x: Tensor) -> Tensor:
    return x.flatten(1).double()


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = MEDIAN_SUBSET) -> float:
    """Median pairwise Euclidean distance of the pooled samples (distinct pairs).

    At most `max_points` points enter (the first ones of each set in proportion), which
    keeps the cost bounded and the choice deterministic.
    """
    x, y = _flat(x), _flat(y)
    total = x.shape[0] + y.shape[0]
    if total > max_points:
        take_x = max(1, round(max_points * x.shape[0] / total))
        x, y = x[:take_x], y[:max_points - take_x]
    pooled = torch.cat([x, y])
    dist = torch.cdist(pooled, pooled)
    upper = torch.triu_indices(len(pooled), len(pooled), offset=1)
    return float(dist[upper[0], upper[1]].median())


def _kernel_sum(a: Tensor, b: Tensor, gamma: float, block: int,
                exclude_diagonal: bool) -> float:
    """sum_ij exp(-gamma |a_i - b_j|^2), optionally without i == j (a is b then)."""
    total = 0.0
    for start in range(0, a.shape[0], block):
        part = a[start:start + block]
        k = torch.exp(-gamma * torch.cdist(part, b).square())
        if exclude_diagonal:
            rows = torch.arange(part.shape[0])
            k[rows, rows + start] = 0.0
        total += float(k.sum())
    return total


def gaussian_mmd2(x: Tensor, y: Tensor, bandwidth: Optional[float] = None,
                  block: int = 1024) -> MMDResult:
    """Unbiased MMD^2 between samples x (n, ...) and y (m, ...) with a Gaussian kernel.

    `bandwidth` None uses the median heuristic. Both sets need at least two samples.
    """
    x, y = _flat(x), _flat(y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two samples in each set")
    median = bandwidth is None
    h = median_bandwidth(x, y) if median else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")
    gamma = 1.0 / (2 * h * h)
    kxx = _kernel_sum(x, x, gamma, block, exclude_diagonal=True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, gamma, block, exclude_diagonal=True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma, block, exclude_diagonal=False) / (n * m)
    return MMDResult(kxx + kyy - 2 * kxy, h, n, m, median)


def random_directions(num: int, dim: int, seed: int = 0) -> Tensor:
    """`num` directions uniform on the unit sphere in R^dim, (num, dim) float64, seeded."""
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(num, dim, generator=gen, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def wasserstein_1d(a: Tensor, b: Tensor, p: float = 2.0) -> Tensor:
    """W_p^p between the empirical distributions of each row of a (L, n) and b (L, m).

    Integrates |F^-1(u) - G^-1(u)|^p over u in (0, 1): the two quantile functions are
    piecewise constant, so the integral is a sum over the merged breakpoints k/n, k/m.
    """
    a, _ = a.sort(dim=1)
    b, _ = b.sort(dim=1)
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return (a - b).abs().pow(p).mean(1)
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()
    lower = torch.cat([levels.new_zeros(1), levels[:-1]])
    mid = (lower + levels) / 2                       # strictly inside each piece
    ia = (mid * n).floor().long().clamp(max=n - 1)
    ib = (mid * m).floor().long().clamp(max=m - 1)
    widths = (levels - lower).to(a.device)
    return ((a[:, ia] - b[:, ib]).abs().pow(p) * widths).sum(1)


@dataclass(frozen=True)
class SlicedWassersteinResult:
    """SW_p and the Monte-Carlo standard error of the estimate over the projections."""

    distance: float
    stderr: float
    p: float
    num_projections: int
    seed: int


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, p: float = 2.0,
                       seed: int = 0, block: int = 64) -> SlicedWassersteinResult:
    """SW_p between samples x (n, ...) and y (m, ...): Monte Carlo over seeded directions.

    The standard error is that of the mean of W_p^p over projections, carried to SW_p by
    the delta method (it measures the projection noise only, not the sampling noise).
    """
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sample sets have dimensions {x.shape[1]} and {y.shape[1]}")
    theta = random_directions(num_projections, x.shape[1], seed).to(x.device)
    per = torch.cat([wasserstein_1d(dirs @ x.T, dirs @ y.T, p)
                     for dirs in theta.split(block)])
    mean = float(per.mean())
    distance = mean ** (1 / p)
    if num_projections < 2:
        stderr = math.nan
    elif mean == 0:
        stderr = 0.0
    else:
        stderr = float(per.std()) / math.sqrt(num_projections) * mean ** (1 / p - 1) / p
    return SlicedWassersteinResult(distance, stderr, p, num_projections, seed)
