"""Per-sample class labels (`harness.core.labels`): sample i's label depends on (seed, i)
alone, every block of K consecutive indices holds each class once, the shuffle follows
the documented Philox counters (recomputed here), which noise draws never use."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.labels import LABEL_DRAW, check_rule, sample_labels
from harness.core.noise import SampleNoise
from harness.core.philox import normal_from_bits, philox4x32, philox_words
from harness.errors import ParameterError

N = 211  # not a multiple of any K used: the last block is partial


@pytest.mark.parametrize("classes", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 5])
def test_any_split_into_batches_and_shards_gives_the_same_labels(seed, classes):
    full = sample_labels(seed, range(N), classes)
    assert full.dtype == torch.int64 and full.shape == (N,)
    gen = torch.Generator().manual_seed(seed % 1000)
    for _ in range(5):  # random consecutive batches
        cuts = sorted(torch.randint(1, N, (6,), generator=gen).tolist())
        bounds = [0, *cuts, N]
        parts = [sample_labels(seed, range(a, b), classes) for a, b in zip(bounds, bounds[1:])]
        assert torch.equal(torch.cat(parts), full)
    for world in (2, 3, 8):  # strided shards, each in batches of 5, as torchrun deals them
        for rank in range(world):
            mine = list(range(rank, N, world))
            batches = [sample_labels(seed, mine[j:j + 5], classes)
                       for j in range(0, len(mine), 5)]
            assert torch.equal(torch.cat(batches), full[mine])
    order = torch.randperm(N, generator=gen).tolist()  # any order, one at a time
    assert torch.equal(sample_labels(seed, order, classes), full[order])
    assert all(int(sample_labels(seed, [i], classes)) == int(full[i]) for i in order[:20])


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_every_block_of_k_holds_each_class_exactly_once(classes):
    labels = sample_labels(3, range(classes * 500), classes)
    blocks = labels.reshape(500, classes)
    expected = torch.arange(classes).expand(500, classes)
    assert torch.equal(blocks.sort(1).values, expected)
    # Hence every prefix (the first N samples of a run) is balanced to within one.
    for n in range(1, 3 * classes + 2):
        counts = torch.bincount(labels[:n], minlength=classes)
        assert int(counts.max() - counts.min()) <= 1


def test_the_order_within_blocks_is_shuffled_uniformly():
    """Over many blocks, each class is at each position of its block 1/K of the time."""
    k, blocks = 4, 4000
    labels = sample_labels(11, range(k * blocks), k).reshape(blocks, k)
    table = torch.zeros(k, k)
    for position in range(k):
        table[position] = torch.bincount(labels[:, position], minlength=k).double()
    expected = blocks / k
    sd = math.sqrt(blocks * (1 / k) * (1 - 1 / k))
    assert (table - expected).abs().max() < 6 * sd
    assert len({tuple(row) for row in labels[:200].tolist()}) == math.factorial(k)


def test_labels_follow_the_documented_philox_counters():
    """Block b's order: the classes sorted by Philox4x32-10 word 0 at counter
    (j, LABEL_DRAW, b mod 2^32, b // 2^32) under key (seed mod 2^32, seed // 2^32)."""
    k = 5
    for seed in (0, 9, 2**33 + 1):
        for block in (0, 1, 17, 2**32 + 3):
            counter = torch.tensor([[j, LABEL_DRAW, block % 2**32, block >> 32]
                                    for j in range(k)], dtype=torch.int64).T
            words = philox4x32(counter, (seed % 2**32, seed >> 32))[0]
            expected = sorted(range(k), key=lambda j: (int(words[j]), j))
            got = sample_labels(seed, range(block * k, block * k + k), k).tolist()
            assert got == expected, (seed, block)
    assert LABEL_DRAW == 2**32 - 1


@pytest.mark.parametrize("index", [6, 2**32 + 1])
def test_noise_draw_k_uses_counter_word_k(index):
    """Noise draw k of sample i is Philox at (g, k, i mod 2^32, i // 2^32) (the same key):
    a label's counter has word 1 = LABEL_DRAW, so the two meet only at draw LABEL_DRAW,
    which a sampler would reach after 2^32 - 1 draws (but see the next test)."""
    seed, numel = 4, 10
    groups = -(-numel // 4)
    noise = SampleNoise(seed, [index], (numel,), dtype=torch.float64)
    for k in (0, 1, 5):
        counter = torch.tensor([list(range(groups)), [k] * groups, [index % 2**32] * groups,
                                [index >> 32] * groups], dtype=torch.int64)[:, None, :]
        bits = philox_words(counter, (seed, 0))
        expected = normal_from_bits(bits, torch.float64).reshape(1, -1)[:, :numel]
        assert torch.equal(noise.draw(k), expected)


def test_noise_refuses_the_draw_number_that_labels_use():
    with pytest.raises(ValueError):
        SampleNoise(0, [0], (4,)).draw(LABEL_DRAW)


def test_labels_depend_on_the_seed():
    k = 10
    base = sample_labels(0, range(2000), k)
    for other in (1, 2, 2**32, 2**32 + 1, 12345):
        same = float((sample_labels(other, range(2000), k) == base).double().mean())
        assert same < 0.15, other  # ~ 1/K for independent shuffles


def test_given_labels_are_dealt_out_in_turn_whatever_the_seed():
    given = [2, 0, 2, 1]
    for seed in (0, 5):
        labels = sample_labels(seed, range(11), 3, given)
        assert labels.tolist() == [given[i % 4] for i in range(11)]
        assert sample_labels(seed, [9, 4], 3, tuple(given)).tolist() == [given[1], given[0]]
    assert sample_labels(0, range(5), 3, [1]).tolist() == [1] * 5


@pytest.mark.parametrize("rule, classes, match", [
    ("Balanced", 3, "'balanced' or a list"),
    ("uniform", 3, "'balanced' or a list"),
    ([], 3, "classes 0 .. 2"),
    ([3], 3, "classes 0 .. 2"),
    ([0, -1], 3, "classes 0 .. 2"),
    ("balanced", 0, "conditional model"),
    ([0], 0, "conditional model"),
])
def test_bad_rules_and_classes_are_refused(rule, classes, match):
    with pytest.raises(ParameterError, match=match):
        sample_labels(0, range(4), classes, rule)
    with pytest.raises(ParameterError, match=match):
        check_rule(rule, classes)


def test_check_rule_accepts_what_sample_labels_follows():
    for rule in (None, "balanced", [0, 2], (1,)):
        check_rule(rule, 3)
    assert sample_labels(0, [], 3).shape == (0,)
    with pytest.raises(ParameterError, match="below 2\\^63"):
        sample_labels(0, [2**63], 3)


def test_windows_starting_at_a_block_are_balanced_to_within_one():
    # As documented: windows that start at a multiple of K (every run's range(N)).
    # A window cutting two blocks can be off by two (K = 3, seed 0, indices 1 .. 28).
    k = 3
    labels = sample_labels(0, range(60), k)
    counts = torch.bincount(labels[1:29], minlength=k)
    assert int(counts.max() - counts.min()) == 2
    for start in range(0, 30, k):
        for n in range(1, 30):
            counts = torch.bincount(labels[start:start + n], minlength=k)
            assert int(counts.max() - counts.min()) <= 1, (start, n, counts.tolist())


def test_indices_and_seeds_the_noise_refuses_are_refused():
    for seed, indices in ((0, [-1]), (-1, [0]), (2**64, [0])):
        with pytest.raises((ParameterError, ValueError)):
            sample_labels(seed, indices, 3)


def test_given_labels_that_are_not_integers_are_refused():
    for rule in ([1.5], [True, 0]):
        with pytest.raises(ParameterError):
            sample_labels(0, range(3), 3, rule)
