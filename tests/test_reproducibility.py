"""Sample i depends only on (seed, i): not on the batch it is generated in."""

from __future__ import annotations

import pytest
import torch

from harness import generate, make_grid
from harness.core.noise import SampleNoise

from .conftest import all_sampler_names


@pytest.mark.parametrize("name", all_sampler_names())
def test_same_seed_same_samples_and_batch_independence(plugins, gmm64_vp, name):
    sampler = plugins.samplers.get(name)
    grid = make_grid(gmm64_vp.sde, "karras", 12)
    one_batch = generate(gmm64_vp, sampler, grid, seed=7, indices=range(64))
    again = generate(gmm64_vp, sampler, grid, seed=7, indices=range(64))
    in_four = torch.cat([generate(gmm64_vp, sampler, grid, seed=7,
                                  indices=range(i, i + 16)) for i in range(0, 64, 16)])
    assert torch.equal(one_batch, again)
    torch.testing.assert_close(in_four, one_batch, rtol=1e-12, atol=1e-12)
    other_seed = generate(gmm64_vp, sampler, grid, seed=8, indices=range(64))
    assert not torch.equal(one_batch, other_seed)


def test_noise_streams_are_per_sample():
    whole = SampleNoise(3, range(10), (4,))
    part = SampleNoise(3, [7, 8], (4,))
    for _ in range(20):  # crosses a block boundary
        a, b = whole(), part()
        assert torch.equal(a[7:9], b)


def test_noise_refuses_the_wrong_shape():
    noise = SampleNoise(0, range(3), (2,))
    with pytest.raises(ValueError, match="noise requested for shape"):
        noise(torch.zeros(4, 2))
