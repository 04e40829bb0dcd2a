"""Per-sample random streams: sample i's noise depends only on (seed, i).

Every sample owns a generator seeded from (seed, index) through NumPy's SeedSequence,
so a sample is identical whether it is generated alone, in a batch of 64 or on another
process of a sharded run. Noise is drawn on the CPU in float32 and then moved, which
makes samples identical across devices and dtypes too (up to the arithmetic).

Drawing per sample costs one generator call per sample; to keep that off the sampling
loop's critical path each stream is drawn `block` steps at a time. The block size is a
constant of the stream, not of the batch, so it does not affect reproducibility.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

BLOCK = 16


def sample_seed(seed: int, index: int) -> int:
    """The 63-bit generator seed of sample `index` in a run with base `seed`."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SampleNoise:
    """A source of standard-normal draws, one independent stream per sample.

    Call it with a tensor shaped like the sampler state (B, *shape) to get the next
    draw of every sample's stream; the first draw is used by the harness for the
    initial noise x_T, so a sampler's own draws continue the same streams.
    """

    def __init__(self, seed: int, indices: Sequence[int], shape: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 block: int = BLOCK):
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.block = block
        self.draws = 0
        self._generators = [torch.Generator().manual_seed(sample_seed(seed, i))
                            for i in self.indices]
        self._buffer: Tensor | None = None
        self._position = block

    def __len__(self) -> int:
        return len(self.indices)

    def _refill(self) -> None:
        block = torch.stack([torch.randn((self.block, *self.shape), generator=g)
                             for g in self._generators])
        if self.device.type == "cuda":
            block = block.pin_memory()
        self._buffer = block.to(self.device, self.dtype, non_blocking=True)
        self._position = 0

    def __call__(self, like: Tensor | None = None) -> Tensor:
        """The next standard-normal draw, shape (B, *shape); `like` is checked if given."""
        if like is not None and tuple(like.shape) != (len(self.indices), *self.shape):
            raise ValueError(
                f"noise requested for shape {tuple(like.shape)}, but this source draws "
                f"{(len(self.indices), *self.shape)}")
        if self._position == self.block:
            self._refill()
        draw = self._buffer[:, self._position]
        self._position += 1
        self.draws += 1
        return draw
