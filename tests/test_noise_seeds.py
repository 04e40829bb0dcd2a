"""The vectorised per-sample seeds and the block refill reproduce the reference streams."""

from __future__ import annotations

import random

import pytest
import torch

from harness.core.noise import SampleNoise, sample_seed, sample_seeds


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 2])
def test_vectorised_seeds_equal_numpy_seed_sequence(seed):
    pick = random.Random(seed)
    indices = list(range(200)) + [pick.randrange(2**32 - 1) for _ in range(200)]
    assert sample_seeds(seed, indices) == [sample_seed(seed, i) for i in indices]


@pytest.mark.parametrize("seed, index", [(2**32 - 1, 3), (5, 2**32 - 1), (2**40, 9),
                                         (3, 2**45 + 17)])
def test_values_numpy_splits_into_several_words_take_the_reference_path(seed, index):
    assert sample_seeds(seed, [0, index]) == [sample_seed(seed, 0), sample_seed(seed, index)]


def test_no_indices_no_seeds():
    assert sample_seeds(0, []) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_stream_is_its_generator_drawn_alone_block_by_block(dtype):
    shape, block = (1, 3, 3), 4
    noise = SampleNoise(11, [5, 9, 2], shape, dtype=dtype, block=block)
    draws = torch.stack([noise() for _ in range(2 * block + 1)], dim=1)  # three refills
    for row, index in enumerate([5, 9, 2]):
        generator = torch.Generator().manual_seed(sample_seed(11, index))
        alone = torch.cat([torch.randn((block, *shape), generator=generator)
                           for _ in range(3)])[:2 * block + 1]
        assert torch.equal(draws[row], alone.to(dtype))
    assert draws.dtype == dtype and noise.draws == 2 * block + 1
