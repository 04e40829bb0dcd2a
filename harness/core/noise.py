"""Per-sample random streams: sample i's noise depends only on (seed, i).

Draw k of sample i is computed, not advanced to: value j of it is normal number j mod 4 of
Philox4x32-10 (`harness.core.philox`) at the counter

    (j // 4, k, i mod 2^32, i // 2^32)   under the key   (seed mod 2^32, seed // 2^32),

turned into normals by Box-Muller. Every draw of every sample of a batch is therefore one
vectorised computation on the model's device (no per-sample generator, no host copy,
nothing drawn ahead that the sampler might not use), and a sample's numbers are the same
whether it is generated alone, in a batch of 4096 or on another process of a sharded run.

Exactness: the integer bits are identical on every device. The normals are computed
from them in float32 (log, sqrt, cos, sin, element-wise) and cast to the requested dtype,
so every dtype sees the same numbers to its rounding, and on one device type a sample's
noise is bit-identical for any batch size and sharding (`tests/test_noise_seeds.py`).
Between the CPU and CUDA the libraries' float32 log/cos/sin may differ in the last bits:
|difference| <= 1e-5 (about 20 units in the last place of the largest normal, 6.66;
checked by `benchmarks/gpu_check.sh`).

Speed: where `torch.compile` works, a large draw runs as two compiled kernels around
ATen's log, cos and sin (`harness.core.fused_noise`, which says when they are used and
why their draws are the eager ones bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .fused_noise import draw_numbers, fused_draw, round_key_tensor
from .philox import MASK32, WORDS, normal_from_bits, philox_words

_LIMIT = 2**64


class SampleNoise:
    """A source of standard-normal draws, one independent stream per sample.

    Call it with a tensor shaped like the sampler state (B, *shape) to get the next
    draw of every sample's stream; the first draw is used by the harness for the
    initial noise x_T, so a sampler's own draws continue the same streams.

    Args:
        seed: the run's base seed, 0 <= seed < 2^64.
        indices: the samples' indices in the run, each 0 <= i < 2^64.
        shape: the shape of one sample.
        device, dtype: where and in what the draws are returned.
    """

    def __init__(self, seed: int, indices: Sequence[int], shape: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.shape = tuple(int(n) for n in shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.draws = 0
        if not 0 <= self.seed < _LIMIT:
            raise ValueError(f"seed must be in [0, 2^64), got {self.seed}")
        if any(not 0 <= i < _LIMIT for i in self.indices):
            raise ValueError("sample indices must be in [0, 2^64)")
        self._key = (self.seed & MASK32, self.seed >> 32)
        self._numel = 1
        for n in self.shape:
            self._numel *= n
        self._groups = -(-self._numel // WORDS)
        self._index = self._index_words()
        self._fused = fused_draw(self.device, draw_numbers(len(self.indices), self._numel))
        if self._fused is None:
            self._counter = self._base_counter()
        else:
            self._round_keys = round_key_tensor(self.seed, self.device)
            self._draw = torch.zeros((), dtype=torch.int64, device=self.device)

    def _index_words(self) -> Tensor:
        """(B, 2) int64 words (i mod 2^32, i // 2^32) of the indices, on the device."""
        # Split on the host (exact for any 64-bit index); one copy to the device.
        indices = np.array(self.indices, dtype=np.uint64)
        words = np.stack((indices & np.uint64(MASK32), indices >> np.uint64(32)), 1)
        index = torch.from_numpy(words.astype(np.int64))
        if self.device.type == "cuda":  # an asynchronous copy needs page-locked memory
            index = index.pin_memory()
        return index.to(self.device, non_blocking=True)

    def _base_counter(self) -> Tensor:
        """(4, B, G) counters of draw 0: G = ceil(numel / 4) per sample, built once."""
        counter = torch.empty((WORDS, len(self.indices), self._groups), dtype=torch.int64,
                              device=self.device)
        counter[0] = torch.arange(self._groups, dtype=torch.int64, device=self.device)
        counter[1] = 0
        counter[2] = self._index[:, 0, None]
        counter[3] = self._index[:, 1, None]
        return counter

    def __len__(self) -> int:
        return len(self.indices)

    def draw(self, k: int) -> Tensor:
        """Draw k of every sample's stream, shape (B, *shape); does not advance `draws`."""
        if not 0 <= k < MASK32:  # 2^32 - 1 is the labels' counter word (`labels.py`)
            raise ValueError(f"draw number must be in [0, 2^32 - 1), got {k}")
        if self._fused is None:
            self._counter[1] = k
            normals = normal_from_bits(philox_words(self._counter, self._key), self.dtype)
        else:
            self._draw.fill_(k)  # a tensor, not a constant: no recompilation per draw
            normals = self._fused(self._index, self._round_keys, self._draw, self._groups,
                                  self.dtype)
        batch = len(self.indices)
        flat = normals.reshape(batch, self._groups * WORDS)
        if flat.shape[1] != self._numel:  # the last counter's unused words
            flat = flat[:, :self._numel]
        return flat.reshape(batch, *self.shape)

    def __call__(self, like: Tensor | None = None) -> Tensor:
        """The next standard-normal draw, shape (B, *shape); `like` is checked if given."""
        if like is not None and tuple(like.shape) != (len(self.indices), *self.shape):
            raise ValueError(
                f"noise requested for shape {tuple(like.shape)}, but this source draws "
                f"{(len(self.indices), *self.shape)}")
        draw = self.draw(self.draws)
        self.draws += 1
        return draw
