"""Philox4x32-10 against Random123's published answers and a scalar reading of the paper,
and its normals as a random number generator: moments, KS, bits, independence."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

from harness.core.noise import SampleNoise
from harness.core.philox import normal_from_bits, philox4x32

# Random123 (tests/kat_vectors), the "philox4x32" lines: rounds, ctr[4], key[2], expected[4].
KNOWN_ANSWERS = """
7  00000000 00000000 00000000 00000000 00000000 00000000 5f6fb709 0d893f64 4f121f81 4f730a48
7  ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff 5207ddc2 45165e59 4d8ee751 8c52f662
7  243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0 4dfccaba 190a87f0 c47362ba b6b5242a
10 00000000 00000000 00000000 00000000 00000000 00000000 6627e8d5 e169c58d bc57ac4c 9b00dbd8
10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff 408f276d 41c83b0e a20bc7c6 6d5451fd
10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0 d16cfe09 94fdcceb 5001e420 24126ea1
"""


def _known_answers():
    for line in KNOWN_ANSWERS.strip().splitlines():
        rounds, *words = line.split()
        words = [int(w, 16) for w in words]
        yield int(rounds), words[:4], tuple(words[4:6]), words[6:]


@pytest.mark.parametrize("rounds, counter, key, expected", list(_known_answers()))
def test_known_answer_vectors(rounds, counter, key, expected):
    # The same counter twice, next to another one: batching must not matter either.
    batch = torch.tensor([counter, [1, 2, 3, 4], counter], dtype=torch.int64).T
    out = philox4x32(batch, key, rounds=rounds)
    assert out[:, 0].tolist() == expected
    assert out[:, 2].tolist() == expected


def _scalar_philox(counter: list[int], key: tuple[int, int], rounds: int = 10) -> list[int]:
    """Philox4x32 as Salmon et al. (2011) define it, one Python integer at a time."""
    mask = 2**32 - 1
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & mask, (p0 >> 32) ^ c3 ^ k1, p0 & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return [c0, c1, c2, c3]


def test_random_counters_and_keys_match_the_scalar_definition():
    pick = random.Random(0)
    for _ in range(5):
        key = (pick.getrandbits(32), pick.getrandbits(32))
        counters = [[pick.getrandbits(32) for _ in range(4)] for _ in range(50)]
        out = philox4x32(torch.tensor(counters, dtype=torch.int64).T, key).T.tolist()
        assert out == [_scalar_philox(c, key) for c in counters]


def test_box_muller_of_known_words():
    # u = (w0 + 1) / 2^32 = 1/2, theta = 2 pi w1 / 2^32 = pi/2: (0, r); u = 1: r = 0.
    bits = torch.tensor([[2**31 - 1], [2**30], [2**32 - 1], [0]], dtype=torch.int64)
    r = math.sqrt(-2 * math.log(0.5))
    expected = torch.tensor([[r * math.cos(math.pi / 2), r, 0.0, 0.0]])
    torch.testing.assert_close(normal_from_bits(bits, torch.float64), expected.double(),
                               atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def normals() -> np.ndarray:
    """2^20 normals: 4096 samples x 256 values of draw 0."""
    return SampleNoise(2024, range(4096), (256,), dtype=torch.float64)().numpy().ravel()


def test_moments_are_those_of_a_standard_normal(normals):
    n = normals.size
    # Standard errors of the sample mean, variance, skewness and excess kurtosis.
    assert abs(normals.mean()) < 5 / math.sqrt(n)
    assert abs(normals.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(normals)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(normals)) < 5 * math.sqrt(24 / n)


def test_kolmogorov_smirnov_against_the_normal_cdf(normals):
    # At 2^20 values the KS test sees a CDF error of about 2e-3.
    assert stats.kstest(normals, "norm").pvalue > 1e-3


def test_tail_frequencies(normals):
    # P(|z| > 3) = 2.7e-3: about 2830 of 2^20, with a standard deviation of 53.
    expected = normals.size * 2 * stats.norm.sf(3)
    assert abs(np.sum(np.abs(normals) > 3) - expected) < 5 * math.sqrt(expected)


def test_every_output_bit_is_a_fair_coin():
    counter = torch.zeros((4, 2**16), dtype=torch.int64)
    counter[0] = torch.arange(2**16)  # consecutive counters: the hardest case
    bits = philox4x32(counter, (7, 0))
    frequencies = torch.stack([(bits >> b) & 1 for b in range(32)]).double().mean(-1)
    assert (frequencies - 0.5).abs().max() < 5 * 0.5 / math.sqrt(2**16)


def _max_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |Pearson correlation| between matching columns of a and b (n, m)."""
    a, b = a - a.mean(0), b - b.mean(0)
    corr = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))
    return float(corr.abs().max())


def test_neighbouring_samples_draws_seeds_and_values_are_uncorrelated():
    n = 20000
    bound = 5 / math.sqrt(n)   # each correlation ~ N(0, 1/n) when independent
    noise = SampleNoise(5, range(n + 1), (8,), dtype=torch.float64)
    first, second = noise(), noise()
    other_seed = SampleNoise(6, range(n + 1), (8,), dtype=torch.float64)()
    assert _max_correlation(first[:-1], first[1:]) < bound          # sample i vs i + 1
    assert _max_correlation(first, second) < bound                  # draw k vs k + 1
    assert _max_correlation(first, other_seed) < bound              # seed s vs s + 1
    assert _max_correlation(first[:, :-1], first[:, 1:]) < bound    # value j vs j + 1
    # A pair of one Box-Muller transform: uncorrelated, and r^2 = z0^2 + z1^2 ~ chi2(2).
    squared = (first[:, 0] ** 2 + first[:, 1] ** 2).numpy()
    assert stats.kstest(squared, "chi2", args=(2,)).pvalue > 1e-3
