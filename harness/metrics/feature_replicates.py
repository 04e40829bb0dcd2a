"""FID and KID of bootstrap resamples, computed from features extracted once.

Re-running a metric on each of B resampled sets would extract features B times; the
statistics below take the features of the whole set and an index set, so a trial's
B replicates cost B small matrix computations (`harness.metrics.bootstrap` explains the
index sets and why they pair samplers). The formulas are those of `harness.metrics.fid`:
FID as torchmetrics computes it (unbiased covariance, float64), KID as the unbiased
polynomial-kernel MMD^2, k(x, y) = (x.y / d + 1)^3, of the whole resampled set against
every reference feature (the subset average of `KID` estimates the same quantity).
"""

from __future__ import annotations

from torch import Tensor

from .bootstrap import distinct_pairs
from .fid import ReferenceStats, frechet_distance


def fid_replicates(features: Tensor, reference: ReferenceStats, index_sets: Tensor
                   ) -> list[float]:
    """FID of features[idx] against the reference, for each row idx of `index_sets`."""
    features = features.double()
    mean_ref, cov_ref = reference.mean.double(), reference.cov.double()
    values = []
    for idx in index_sets:
        chosen = features[idx]
        mean = chosen.mean(0)
        centred = chosen - mean
        cov = centred.T @ centred / (chosen.shape[0] - 1)
        values.append(frechet_distance(mean, cov, mean_ref, cov_ref))
    return values


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """(x.y / d + 1)^3, KID's kernel (Binkowski et al. 2018), for rows of x and y."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid_replicates(features: Tensor, reference: ReferenceStats, index_sets: Tensor
                   ) -> list[float]:
    """Unbiased MMD^2 of features[idx] against every reference feature, for each idx.

    A resampled set repeats samples: the generated-generated term averages over pairs of
    distinct samples only, or a sample paired with its own copy would count as a match.
    """
    if reference.features is None:
        raise ValueError("KID replicates need the reference features")
    x, y = features.double(), reference.features.double()
    m = y.shape[0]
    k_yy = polynomial_kernel(y, y)
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    k_xx, k_xy = polynomial_kernel(x, x), polynomial_kernel(x, y)
    values = []
    for idx in index_sets:
        pairs = distinct_pairs(idx)
        term_xx = k_xx[idx][:, idx][pairs].mean()
        term_xy = k_xy[idx].mean()
        values.append(float(term_xx + term_yy - 2 * term_xy))
    return values
