"""Per-sample streams: sample i's draw k depends only on (seed, i, k), bit for bit."""

from __future__ import annotations

import pytest
import torch

from harness.core.noise import SampleNoise
from harness.core.philox import philox4x32


def _stack(noise: SampleNoise, draws: int) -> torch.Tensor:
    return torch.stack([noise() for _ in range(draws)], dim=1)


@pytest.mark.parametrize("shape", [(64,), (1, 3, 3), (2, 5)])
def test_any_batch_gives_each_sample_the_same_bits(shape):
    whole = _stack(SampleNoise(11, range(300), shape), 3)
    for batch in (1, 7, 64, 256):
        parts = torch.cat([_stack(SampleNoise(11, range(i, min(i + batch, 300)), shape), 3)
                           for i in range(0, 300, batch)])
        assert torch.equal(parts, whole)


@pytest.mark.parametrize("world", [2, 3, 8])
def test_sharding_gives_each_sample_the_same_bits(world):
    # The runner's split: rank r draws samples r, r + world, ...
    whole = _stack(SampleNoise(4, range(100), (16,)), 2)
    for rank in range(world):
        shard = _stack(SampleNoise(4, range(rank, 100, world), (16,)), 2)
        assert torch.equal(shard, whole[rank::world])


def test_any_order_of_indices():
    indices = [9, 2, 2**40 + 3, 0, 5]
    together = SampleNoise(1, indices, (6,))()
    for row, index in enumerate(indices):
        assert torch.equal(together[row], SampleNoise(1, [index], (6,))()[0])


def test_draw_k_is_the_philox_block_at_counter_value_draw_sample():
    # Independent of SampleNoise's bookkeeping: value j of draw k of sample i under seed s
    # comes from Philox4x32-10 at counter (j // 4, k, i mod 2^32, i // 2^32), key (s mod
    # 2^32, s // 2^32), words (w0, w1) -> j = 0, 1 and (w2, w3) -> j = 2, 3 by Box-Muller.
    seed, index, draw = 2**33 + 17, 2**32 + 5, 2
    noise = SampleNoise(seed, [index], (8,), dtype=torch.float64)
    got = _stack(noise, draw + 1)[0, draw]
    counters = torch.tensor([[g, draw, 5, 1] for g in range(2)], dtype=torch.int64).T
    w = philox4x32(counters, (17, 2)).double()
    radius = lambda word: torch.sqrt(-2 * torch.log((word + 1) / 2**32))  # noqa: E731
    angle = lambda word: 2 * torch.pi * word / 2**32  # noqa: E731
    expected = torch.stack([radius(w[0]) * torch.cos(angle(w[1])),
                            radius(w[0]) * torch.sin(angle(w[1])),
                            radius(w[2]) * torch.cos(angle(w[3])),
                            radius(w[2]) * torch.sin(angle(w[3]))], dim=1).reshape(-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=5e-6)  # float32 transform


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_every_dtype_sees_the_float32_numbers_rounded(dtype):
    reference = SampleNoise(3, range(50), (10,), dtype=torch.float32)()
    draw = SampleNoise(3, range(50), (10,), dtype=dtype)()
    assert draw.dtype == dtype
    assert torch.equal(draw, reference.to(dtype))


def test_draws_counts_what_was_drawn_and_draw_k_reads_without_advancing():
    noise = SampleNoise(0, range(4), (3,))
    third = noise.draw(2)
    assert noise.draws == 0
    first, second, again_third = noise(), noise(), noise()
    assert noise.draws == 3 and torch.equal(again_third, third)
    assert not torch.equal(first, second)


def test_different_seeds_samples_and_draws_differ():
    a = SampleNoise(0, [0, 1], (32,))
    b = SampleNoise(1, [0, 1], (32,))()
    first, second = a(), a()
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first, second)
    assert not torch.equal(first, b)


@pytest.mark.parametrize("seed, indices", [(-1, [0]), (2**64, [0]), (0, [-3]),
                                           (0, [2**64])])
def test_out_of_range_seed_or_index_is_refused(seed, indices):
    with pytest.raises(ValueError, match=r"\[0, 2\^64\)"):
        SampleNoise(seed, indices, (2,))


def test_no_indices_no_noise():
    assert SampleNoise(0, [], (3, 2))().shape == (0, 3, 2)
