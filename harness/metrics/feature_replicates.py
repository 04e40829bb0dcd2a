"""FID and KID of bootstrap resamples, and the first-order part of each, from features.

Re-running a metric on each of B resampled sets would extract features B times; the
statistics below take the features of both sets once, and index sets into each: the
generated samples' (`Bootstrap.index_sets`) and the reference set's
(`Bootstrap.reference_sets`), so that a replicate is the metric of a fresh draw of both
sets, as the metric's own value is. A resample is given by its counts c_i (how often
sample i was drawn, sum N): FID is that of the weighted Gaussians (unbiased covariance,
float64) by FID's one formula (`harness.metrics.fid.frechet_distances`); KID is the
unbiased polynomial-kernel MMD^2, k(x, y) = (x.y / d + 1)^3, over pairs of distinct
samples (a sample paired with its own copy would count as a perfect match), whole set
against whole set.

The first-order part. Beside each replicate T*_b comes its linear part

    l_b = sum_i (c_bi - 1) g_i + sum_a (d_ba - 1) h_a,

the derivative of the statistic with respect to the counts at the observed sets (c = 1,
d = 1), applied to the resample's counts: the delta method (or infinitesimal
jackknife) of the statistic, for generated samples i and reference samples a. It
splits each replicate into what is linear in the resampling and what is not,
T*_b - T = l_b + r_b; `harness.metrics.bootstrap` explains why intervals need the two
apart. Its variance over multinomial counts is sum_i (g_i - mean g)^2 from the samples
and likewise from the reference: `se_samples` and `se_reference`, which of the two sets
limits the metric's precision.

FID's derivatives (mu and S of each set; R = S_r^(1/2), A = R S_g R = U diag(lambda) U'):

    g_i = 2 (mu_g - mu_r).(x_i - mu_g) / N
          + (x_i - mu_g)' (I - R A^(-1/2) R) (x_i - mu_g) / (N - 1)

(the gradient of Tr (S_g S_r)^(1/2) = Tr A^(1/2) in S_g is R A^(-1/2) R / 2), and h_a
alike with the sets' roles swapped. An eigenvalue of A that is zero (a direction in
which a set has no spread, e.g. a feature that is always 0) is left out of A^(-1/2):
reweighting samples never gives a set spread in such a direction, so the derivative
along every resample is the one on the remaining directions.

KID's derivatives (N generated and M reference samples, kernel matrices K):

    g_i = 2 sum_{j != i} K_xx[i, j] / (N (N - 1)) - 2 sum_a K_xy[i, a] / (N M),

and h_a alike, from the kernel matrices' row sums. FID's replicates are computed in
chunks, so that its temporary arrays stay near `CHUNK_ELEMENTS` whatever B and N: beside
the features themselves, FID's replicates hold a few F x F matrices per replicate of a
chunk, never a copy of the (N, F) features (at FID-50k in InceptionV3's space, 800 MB
each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .fid import frechet_distances

#: Elements of the largest temporary array of a chunk of replicates (float64: 128 MiB).
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class Replicates:
    """A set metric on B resamples of both sets, each with its linear part (see above)."""

    #: The metric on the observed sets (every count 1).
    estimate: float
    #: (B,) the metric on each resample.
    values: Tensor
    #: (B,) the first-order part of values - estimate.
    linear: Tensor
    #: First-order standard errors from the generated samples and from the reference.
    se_samples: float
    se_reference: float


def counts(index_sets: Tensor, n: int) -> Tensor:
    """(B, n) float64: how often each of n samples occurs in each index set."""
    out = torch.zeros(index_sets.shape[0], n, dtype=torch.float64)
    return out.scatter_add_(1, index_sets, torch.ones_like(index_sets, dtype=torch.float64))


def _linear(c: Tensor, d: Tensor, g: Tensor, h: Tensor) -> Tensor:
    """sum_i (c_i - 1) g_i + sum_a (d_a - 1) h_a for each row of the counts."""
    return (c - 1) @ g + (d - 1) @ h


def _se(derivative: Tensor) -> float:
    return math.sqrt(float((derivative - derivative.mean()).square().sum()))


def _chunks(total: int, per_replicate: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(per_replicate, 1))
    return [slice(start, min(start + step, total)) for start in range(0, total, step)]


# --- FID ---------------------------------------------------------------------------------

def _weighted_moments(x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (B, F) and unbiased covariance (B, F, F) of x weighted by each row of counts
    c (B, N): those of the resampled set that repeats sample i c_i times."""
    n = c.sum(1)[:, None]
    mean = c @ x / n
    size, dim = x.shape
    if size * dim * dim <= CHUNK_ELEMENTS:  # one matrix product with every x_i x_i'
        outer = (x[:, :, None] * x[:, None, :]).reshape(size, dim * dim)
        second = (c @ outer).reshape(-1, dim, dim)
    else:  # sum_i c_i x_i x_i' over blocks of rows: no (B, N, F) copy of the features
        second = x.new_zeros(c.shape[0], dim, dim)
        rows = max(1, CHUNK_ELEMENTS // (c.shape[0] * dim))
        for start in range(0, size, rows):
            part = x[start:start + rows]
            second += torch.matmul((c[:, start:start + rows, None] * part).transpose(1, 2),
                                   part)
    return mean, ((second - n[:, :, None] * mean[:, :, None] * mean[:, None, :])
                  / (n[:, :, None] - 1))


def _psd_sqrt(cov: Tensor) -> Tensor:
    """The symmetric square root of (a batch of) covariance matrices."""
    eig, vec = torch.linalg.eigh(cov)
    return (vec * eig.clamp(min=0).sqrt()[..., None, :]) @ vec.transpose(-1, -2)


def _trace_sqrt_quadratic(cov_own: Tensor, cov_other: Tensor) -> Tensor:
    """M = I - R A^(-1/2) R with R = cov_other^(1/2), A = R cov_own R: z' M z is the
    derivative of Tr cov_own + ... - 2 Tr (cov_own cov_other)^(1/2) along z z'. Zero
    eigenvalues of A (below rounding) are left out (see the module docstring)."""
    root = _psd_sqrt(cov_other)
    eig, vec = torch.linalg.eigh(root @ cov_own @ root)
    kept = eig > eig.max().clamp(min=0) * eig.shape[0] * torch.finfo(eig.dtype).eps
    inv_sqrt = torch.where(kept, eig.clamp(min=torch.finfo(eig.dtype).tiny).rsqrt(),
                           torch.zeros_like(eig))
    half = root @ (vec * inv_sqrt) @ vec.T @ root
    return torch.eye(cov_own.shape[0], dtype=cov_own.dtype) - half


def _fid_derivative(x: Tensor, mean: Tensor, cov: Tensor, mean_other: Tensor,
                    cov_other: Tensor) -> Tensor:
    """d FID / d c_i for the set x (mean, cov) against the other set (see above)."""
    n, dim = x.shape
    quadratic = _trace_sqrt_quadratic(cov, cov_other)
    out = x.new_empty(n)
    rows = max(1, CHUNK_ELEMENTS // dim)  # blocks of rows: no (N, F) temporaries
    for start in range(0, n, rows):
        centred = x[start:start + rows] - mean
        out[start:start + rows] = (2 * centred @ (mean - mean_other) / n
                                   + ((centred @ quadratic) * centred).sum(1) / (n - 1))
    return out


def fid_replicates(features: Tensor, reference: Tensor, sample_sets: Tensor,
                   reference_sets: Tensor) -> Replicates:
    """FID of features[idx] against reference[ref_idx] for each pair of rows of
    `sample_sets` (B, N) and `reference_sets` (B, M), with the linear parts."""
    x, y = features.double(), reference.double()
    ones_x = torch.ones(1, x.shape[0], dtype=torch.float64)
    ones_y = torch.ones(1, y.shape[0], dtype=torch.float64)
    mean_g, cov_g = (t[0] for t in _weighted_moments(x, ones_x))
    mean_r, cov_r = (t[0] for t in _weighted_moments(y, ones_y))
    g = _fid_derivative(x, mean_g, cov_g, mean_r, cov_r)
    h = _fid_derivative(y, mean_r, cov_r, mean_g, cov_g)
    c, d = counts(sample_sets, x.shape[0]), counts(reference_sets, y.shape[0])
    estimate = float(frechet_distances(mean_r, cov_r, mean_g, cov_g))
    return Replicates(estimate, frechet_weighted(x, c, y, d), _linear(c, d, g, h), _se(g),
                      _se(h))


def frechet_weighted(x: Tensor, c: Tensor, y: Tensor, d: Tensor) -> Tensor:
    """(B,) FID of x weighted by each row of counts c against y weighted by the same
    row of d (float64 features)."""
    values = []
    dim = x.shape[1]
    for part in _chunks(c.shape[0], (max(x.shape[0], y.shape[0]) + dim) * dim):
        values.append(frechet_distances(*_weighted_moments(y, d[part]),
                                        *_weighted_moments(x, c[part])))
    return torch.cat(values)


# --- KID ---------------------------------------------------------------------------------

def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """(x.y / d + 1)^3, KID's kernel (Binkowski et al. 2018), for rows of x and y."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _pairs_mean(kernel: Tensor, c: Tensor) -> Tensor:
    """Mean of the kernel over pairs of distinct samples of each resample (counts c)."""
    n = c.sum(1)
    total = ((c @ kernel) * c).sum(1) - c.square() @ kernel.diagonal()
    return total / (n * n - c.square().sum(1))


def kid_replicates(features: Tensor, reference: Tensor, sample_sets: Tensor,
                   reference_sets: Tensor) -> Replicates:
    """Unbiased MMD^2 of features[idx] against reference[ref_idx] for each pair of rows
    of `sample_sets` and `reference_sets`, with the linear parts."""
    x, y = features.double(), reference.double()
    n, m = x.shape[0], y.shape[0]
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    off_xx = k_xx.sum(1) - k_xx.diagonal()
    off_yy = k_yy.sum(1) - k_yy.diagonal()
    g = 2 * off_xx / (n * (n - 1)) - 2 * k_xy.sum(1) / (n * m)
    h = 2 * off_yy / (m * (m - 1)) - 2 * k_xy.sum(0) / (n * m)
    estimate = float(off_xx.sum() / (n * (n - 1)) + off_yy.sum() / (m * (m - 1))
                     - 2 * k_xy.mean())
    c, d = counts(sample_sets, n), counts(reference_sets, m)
    values = (_pairs_mean(k_xx, c) + _pairs_mean(k_yy, d)
              - 2 * ((c @ k_xy) * d).sum(1) / (c.sum(1) * d.sum(1)))
    return Replicates(estimate, values, _linear(c, d, g, h), _se(g), _se(h))
