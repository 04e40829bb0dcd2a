"""Improved precision and recall (harness.metrics.precision_recall) against an independent
k-NN implementation (scikit-learn's neighbours, scipy's k-d tree) and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from sklearn.neighbors import NearestNeighbors

from harness.metrics import precision_recall as pr
from harness.metrics.precision_recall import knn_radii, precision_recall


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)


def reference_precision_recall(real: np.ndarray, fake: np.ndarray, k: int):
    """Kynkaanniemi et al. 2019, Eq. 1-3, written with scikit-learn and scipy: radius =
    distance to the k-th nearest neighbour other than the point itself (the point is its
    own first neighbour at distance 0 in `kneighbors` of the fitted set); x is inside a
    set's manifold when some point of the set has x within its radius."""
    def radii(points):
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
        return distances[:, k]

    def inside(query, points):
        found = cKDTree(query).query_ball_point(points, r=radii(points))
        hit = np.zeros(len(query), dtype=bool)
        for members in found:
            hit[members] = True
        return hit

    return inside(fake, real).mean(), inside(real, fake).mean(), radii(real)


@pytest.mark.parametrize("dim, k", [(2, 3), (8, 3), (5, 1), (5, 7)])
def test_matches_an_independent_knn_implementation(dim, k):
    real, fake = gaussian(400, dim, 0), gaussian(300, dim, 1, shift=0.8, scale=0.6)
    expected_p, expected_r, expected_radii = reference_precision_recall(
        real.numpy(), fake.numpy(), k)
    result = precision_recall(real, fake, k)
    # Both sides are exact: the same points are inside (a tie at the boundary has
    # probability 0 for continuous data), so the fractions agree exactly.
    assert result.precision == expected_p and result.recall == expected_r
    assert np.allclose(knn_radii(real, k).numpy(), expected_radii, rtol=1e-9, atol=0)
    assert (result.k, result.num_real, result.num_generated) == (k, 400, 300)
    assert 0.05 < result.precision < 1 and 0.05 < result.recall < 1  # not trivial


def test_blocks_do_not_change_the_result():
    real, fake = gaussian(257, 3, 2), gaussian(199, 3, 3, shift=0.5)
    whole = precision_recall(real, fake)
    for block in (1, 7, 300, 10**9):
        part = precision_recall(real, fake, block_elements=block)
        assert torch.equal(part.generated_inside, whole.generated_inside)
        assert torch.equal(part.real_inside, whole.real_inside)


def test_identical_sets_have_precision_and_recall_one():
    x = gaussian(500, 4, 4)
    result = precision_recall(x, x.clone())
    assert result.precision == 1.0 and result.recall == 1.0


def test_far_apart_gaussians_have_precision_and_recall_zero():
    result = precision_recall(gaussian(400, 4, 5), gaussian(400, 4, 6, shift=100.0))
    assert result.precision == 0.0 and result.recall == 0.0


def test_samples_of_one_of_two_modes_are_precise_but_cover_half():
    """Real data: 1000 samples at each of two unit Gaussians 20 apart (2-D); generated:
    2000 samples of the first mode only. Exact bounds: no real sample of the second mode
    is within reach of a generated ball (radii ~0.1, distance ~20), so recall <= 0.5.
    For samples of one distribution against another set of it, the k = 3 balls miss
    about 2-3 % of the points at this N and dimension (the tails; 0.968-0.98 measured
    for N = 500-2000 in 2-D), binomial sd ~0.004 at N = 2000: precision >= 0.95 and
    recall >= 0.45 leave over 4 sd of room."""
    real = torch.cat([gaussian(1000, 2, 7, shift=10.0), gaussian(1000, 2, 8, shift=-10.0)])
    fake = gaussian(2000, 2, 9, shift=10.0)
    result = precision_recall(real, fake)
    assert result.precision >= 0.95
    assert 0.45 <= result.recall <= 0.5
    assert not result.real_inside[1000:].any()


def test_ten_thousand_by_ten_thousand_in_bounded_blocks(monkeypatch):
    """10k x 10k pairs (800 MB of float64 distances at once) are computed in blocks of at
    most BLOCK_ELEMENTS pairs."""
    largest = []
    cdist = torch.cdist

    def recording(a, b, *args, **kwargs):
        largest.append(a.shape[0] * b.shape[0])
        return cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(pr.torch, "cdist", recording)
    real, fake = gaussian(10_000, 8, 10), gaussian(10_000, 8, 11, shift=0.1)
    result = precision_recall(real, fake)
    assert max(largest) <= pr.BLOCK_ELEMENTS
    assert sum(largest) == 4 * 10_000 * 10_000  # two radius passes, two membership passes
    assert 0.5 < result.precision < 1 and 0.5 < result.recall < 1


def test_k_must_leave_neighbours():
    with pytest.raises(ValueError, match="1 <= k < number of points"):
        knn_radii(gaussian(3, 2, 0), k=3)
