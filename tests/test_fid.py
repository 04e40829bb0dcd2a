"""FID and KID against independent computations: scipy's matrix square root,
torchmetrics' FrechetInceptionDistance on the same features, and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from harness.metrics import fid
from harness.metrics.fid import (
    FID,
    KID,
    IdentityFeatures,
    frechet_distance,
    frechet_distances,
    reference_stats,
)


def _gaussian(n, mean, cov_root, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=gen, dtype=torch.float64)
    return torch.as_tensor(mean, dtype=torch.float64) + z @ cov_root.T


class TanhFeatures(nn.Module):
    """A stand-in learned extractor: fixed random linear map and tanh, float32 inside."""

    def __init__(self, dim_in, dim_out, seed=0, tag="a"):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(dim_in, dim_out)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(dim_out, dim_in, generator=gen) / dim_in**0.5)
            self.linear.bias.zero_()
        self.num_features = dim_out
        self.sha256 = f"tanh-{tag}-{seed}"

    def forward(self, x):
        return torch.tanh(self.linear(x.flatten(1).float())).double()


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet formula with scipy's matrix square root (Heusel et al. 2017, Eq. 6)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


@pytest.mark.parametrize("extractor", [IdentityFeatures(6), TanhFeatures(6, 5)],
                         ids=["identity", "learned"])
def test_fid_equals_scipy_sqrtm_on_the_same_features(extractor, tmp_path):
    root = torch.tril(torch.full((6, 6), 0.3, dtype=torch.float64)) + torch.eye(6)
    real = _gaussian(700, [0.0] * 6, root, seed=1)
    fake = _gaussian(500, [0.3, -0.2, 0.0, 0.1, 0.5, 0.0], 0.8 * root, seed=2)
    stats = reference_stats("test:gauss", lambda: real, extractor, cache_dir=tmp_path)
    value, n = FID(extractor, stats)(fake)
    with torch.no_grad():
        expected = _scipy_fid(extractor(real).numpy(), extractor(fake).numpy())
    assert n == 500 and stats.n == 700
    assert value == pytest.approx(expected, rel=1e-6)
    assert stats.features_sum.dtype == stats.features_cov_sum.dtype == torch.float64


def test_fid_of_a_set_with_itself_is_zero(tmp_path):
    x = _gaussian(400, [1.0, 2.0, 3.0], torch.eye(3, dtype=torch.float64) * 2, seed=3)
    extractor = IdentityFeatures(3)
    stats = reference_stats("test:self", lambda: x, extractor, cache_dir=tmp_path)
    value, _ = FID(extractor, stats)(x)
    assert abs(value) < 1e-9 * float(stats.cov.trace())


def test_frechet_formula_matches_the_closed_form_for_known_moments():
    # Commuting (diagonal) covariances: Tr(S1 + S2 - 2 (S1 S2)^(1/2)) = sum (s1 - s2)^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 1.0, 0.5])
    closed = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    value = frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert value == pytest.approx(closed, rel=1e-12)
    # Non-commuting covariances: scipy's sqrtm on the exact matrices.
    a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -0.3], [-0.3, 0.5]], dtype=torch.float64)
    expected = float(np.trace(a.numpy() + b.numpy() - 2 * linalg.sqrtm(a.numpy() @ b.numpy())))
    assert frechet_distance(torch.zeros(2), a, torch.zeros(2), b) == pytest.approx(expected)


def _random_spd(dim: int, gen: torch.Generator, rank: int | None = None) -> torch.Tensor:
    """A random covariance matrix of the given rank (full rank when None)."""
    factor = torch.randn(dim, rank or dim + 3, generator=gen, dtype=torch.float64)
    return factor @ factor.T / factor.shape[1]


@pytest.mark.parametrize("dim", [2, 7, 32])
def test_the_frechet_formula_equals_scipy_sqrtm_on_random_covariances(dim):
    gen = torch.Generator().manual_seed(dim)
    for _ in range(5):
        mu1, mu2 = (torch.randn(dim, generator=gen, dtype=torch.float64) for _ in "ab")
        a, b = _random_spd(dim, gen), _random_spd(dim, gen)
        root = linalg.sqrtm(a.numpy() @ b.numpy()).real
        expected = float((mu1 - mu2).square().sum()) + float(np.trace(a.numpy() + b.numpy()
                                                                      - 2 * root))
        assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-9)


def test_a_batch_of_frechet_distances_is_each_pair_alone():
    gen = torch.Generator().manual_seed(11)
    means = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    covs = torch.stack([_random_spd(5, gen) for _ in range(4)])
    one_mean, one_cov = torch.zeros(5, dtype=torch.float64), _random_spd(5, gen)
    batch = frechet_distances(one_mean, one_cov, means, covs)
    alone = [frechet_distance(one_mean, one_cov, m, c) for m, c in zip(means, covs)]
    assert batch.shape == (4,)
    assert batch.tolist() == pytest.approx(alone, rel=1e-12)


@pytest.mark.parametrize("n_fake", [300, 20], ids=["n>F", "n<F singular"])
def test_fid_equals_torchmetrics_on_the_same_features(n_fake, tmp_path):
    """torchmetrics' FrechetInceptionDistance, given the same extractor, is the
    independent reference: to 1e-9, also where the samples' covariance is singular
    (n <= F) and the value rests on how rounding-level eigenvalues are taken."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = TanhFeatures(40, 32, seed=3)
    gen = torch.Generator().manual_seed(4)
    real = torch.randn(400, 40, generator=gen, dtype=torch.float64)
    fake = 0.3 + 1.2 * torch.randn(n_fake, 40, generator=gen, dtype=torch.float64)
    stats = reference_stats("test:tm", lambda: real, extractor, cache_dir=tmp_path)
    value, n = FID(extractor, stats)(fake)
    reference = FrechetInceptionDistance(feature=extractor)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert n == n_fake
    assert value == pytest.approx(float(reference.compute()), rel=1e-9)


def test_fid_of_samples_from_two_gaussians_approaches_the_closed_form(tmp_path):
    # N(0, I) against N(m, diag(s^2)); FID's bias is O(D / N), small at N = 40k in 4-D.
    m = torch.tensor([0.5, 0.0, -0.5, 0.2], dtype=torch.float64)
    s = torch.tensor([1.0, 1.5, 0.7, 1.0], dtype=torch.float64)
    closed = float((m**2).sum() + ((s - 1) ** 2).sum())
    real = _gaussian(40_000, [0.0] * 4, torch.eye(4, dtype=torch.float64), seed=4)
    fake = _gaussian(40_000, m.tolist(), torch.diag(s), seed=5)
    extractor = IdentityFeatures(4)
    stats = reference_stats("test:two", lambda: real, extractor, cache_dir=tmp_path)
    value, _ = FID(extractor, stats)(fake)
    assert value == pytest.approx(closed, abs=0.02)


def test_reference_statistics_are_cached_per_data_and_extractor(tmp_path):
    x = _gaussian(50, [0.0] * 6, torch.eye(6, dtype=torch.float64), seed=6)
    calls = []

    def images():
        calls.append(1)
        return x

    first, second = TanhFeatures(6, 4, tag="a"), TanhFeatures(6, 4, tag="b")
    a = reference_stats("data:1", images, first, cache_dir=tmp_path)
    assert len(calls) == 1 and fid.cache_path("data:1", first.sha256, tmp_path).is_file()
    b = reference_stats("data:1", images, first, cache_dir=tmp_path)       # hit
    assert len(calls) == 1
    torch.testing.assert_close(b.features_cov_sum, a.features_cov_sum, rtol=0, atol=0)
    reference_stats("data:1", images, second, cache_dir=tmp_path)          # other extractor
    assert len(calls) == 2
    reference_stats("data:2", images, first, cache_dir=tmp_path)           # other data
    assert len(calls) == 3
    kept = reference_stats("data:1", images, first, cache_dir=tmp_path, keep_features=True)
    assert len(calls) == 4 and kept.features.shape == (50, 4)              # needs features
    stored = torch.load(fid.cache_path("data:1", first.sha256, tmp_path), weights_only=True)
    assert stored["n"] == 50 and stored["cov"].shape == (4, 4)
    torch.testing.assert_close(stored["mean"], a.mean)
    with pytest.raises(ValueError, match="another extractor"):
        FID(second, a)


def test_kid_equals_the_unbiased_polynomial_mmd(tmp_path):
    extractor = IdentityFeatures(5)
    real = _gaussian(120, [0.0] * 5, torch.eye(5, dtype=torch.float64), seed=8)
    fake = _gaussian(120, [0.4] * 5, torch.eye(5, dtype=torch.float64), seed=9)
    stats = reference_stats("test:kid", lambda: real, extractor, cache_dir=tmp_path,
                            keep_features=True)
    # One subset of all N points is a permutation of the whole set: a deterministic value.
    mean, std, n = KID(extractor, stats, subset_size=5000, subsets=1)(fake)
    kernel = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    off = lambda k: (k.sum() - k.trace()) / (120 * 119)  # noqa: E731
    assert mean == pytest.approx(float(off(kxx) + off(kyy) - 2 * kxy.mean()), rel=1e-10)
    assert n == 120 and std == 0.0
    again = KID(extractor, stats, subset_size=50, subsets=20, seed=3)
    assert again(fake)[0] == again(fake)[0]            # seeded subsets: reproducible
    self_kid = KID(extractor, stats, subset_size=100, subsets=20)(real)[0]
    assert abs(self_kid) < 0.2 * mean


def test_inception_needs_local_weights_and_gets_uint8_rgb(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        fid.inception_extractor(tmp_path / "missing.pth")
    seen = {}

    def fake_inception(images):
        seen["images"] = images
        return torch.zeros(images.shape[0], 7)

    wrapper = fid._InceptionInput(fake_inception)
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    wrapper(x)
    images = seen["images"]
    assert images.dtype == torch.uint8 and images.shape == (1, 3, 2, 2)
    assert images[0, :, 0, 0].tolist() == [0, 0, 0]
    assert images[0, 0].flatten().tolist() == [0, 128, 255, 255]


def test_digits_extractor_is_float64_and_named_by_its_hash():
    extractor = fid.digits_extractor("cpu")
    features = extractor(torch.zeros(3, 1, 8, 8))
    assert features.dtype == torch.float64 and features.shape == (3, extractor.num_features)
    assert len(extractor.sha256) == 64 and not math.isnan(float(features.sum()))
