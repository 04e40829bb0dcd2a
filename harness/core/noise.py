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
so every dtype sees the same numbers to its rounding, and on one machine a sample's
noise is bit-identical for any batch size and sharding (`tests/test_noise_seeds.py`).
Between machines the float32 functions may differ in the last bits:

- between CPUs: ATen takes float32 log and sqrt from MKL's vector math, whose code path
  follows the processor's instruction set. Measured on one AVX-512 Xeon, 4.2 M normals:
  MKL's AVX2 path (MKL_ENABLE_INSTRUCTIONS=AVX2) gives 3.7 % of them different, its
  SSE4.2 path (as MKL_CBWR=COMPATIBLE) 17 %, each by at most 2.3e-7 relative (one unit
  in the last place). cos and sin (Sleef) were the same on all three. So a run on an
  AVX2 CPU reproduces an AVX-512 CPU's numbers to float rounding, not bit for bit
  (`tests/test_metric_values_unchanged.py`'s tolerance is set for it). The same
  Box-Muller in float64, rounded to float32, gave identical normals on all three paths
  (`benchmarks/noise_across_cpus.py`, `results/microbench/noise_across_cpus.md`);
- between the CPU and CUDA: |difference| <= 1e-5 (about 20 units in the last place of
  the largest normal, 6.66; checked by `benchmarks/gpu_check.sh`).

Speed: where `torch.compile` works, a large draw runs as two compiled kernels around
ATen's log, cos and sin (`harness.core.fused_noise`, which says when they are used and
why their draws are the eager ones bit for bit). In a captured loop (`--capture
compiled`) each draw is traced and fused with the update that reads it; there the
normals take inductor's log, sqrt, cos and sin and agree with these to float32 rounding
(`harness.bench.running.capture`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .fused_noise import draw_numbers, fused_draw, round_key_tensor
from .philox import MASK32, WORDS, normal_from_bits, philox_rounds

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
        self._numel = 1
        for n in self.shape:
            self._numel *= n
        #: (B, 2) int64 words (i mod 2^32, i // 2^32) of the indices, on the device.
        self.index_words = self._index_words()
        #: The seed's Philox round keys, (rounds, 2) int64 on the device.
        self.round_keys = round_key_tensor(self.seed, self.device)

    def _index_words(self) -> Tensor:
        # Split on the host (exact for any 64-bit index); one copy to the device.
        indices = np.array(self.indices, dtype=np.uint64)
        words = np.stack((indices & np.uint64(MASK32), indices >> np.uint64(32)), 1)
        index = torch.from_numpy(words.astype(np.int64))
        if self.device.type == "cuda":  # an asynchronous copy needs page-locked memory
            index = index.pin_memory()
        return index.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.indices)

    def draw(self, k: int) -> Tensor:
        """Draw k of every sample's stream, shape (B, *shape); does not advance `draws`."""
        normals = normals_at(self.index_words, self.round_keys, k, self._numel, self.dtype)
        return normals.reshape(len(self.indices), *self.shape)

    def __call__(self, like: Tensor | None = None) -> Tensor:
        """The next standard-normal draw, shape (B, *shape); `like` is checked if given."""
        if like is not None and tuple(like.shape) != (len(self.indices), *self.shape):
            raise ValueError(
                f"noise requested for shape {tuple(like.shape)}, but this source draws "
                f"{(len(self.indices), *self.shape)}")
        draw = self.draw(self.draws)
        self.draws += 1
        return draw


def check_draw_number(k: int) -> None:
    """Refuse a draw number outside [0, 2^32 - 1): 2^32 - 1 is the labels' counter word
    (`labels.py`)."""
    if not 0 <= k < MASK32:
        raise ValueError(f"draw number must be in [0, 2^32 - 1), got {k}")


def normals_at(index: Tensor, round_keys: Tensor, k: int, numel: int,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw k of the samples whose index words are `index` ((B, 2) int64), under a seed's
    `round_keys` ((rounds, 2) int64, `harness.core.fused_noise.round_key_tensor`): the
    (B, numel) normals of the module docstring, on `index`'s device, by the compiled draw
    where `harness.core.fused_noise` chooses it. Every operation is on the device (no
    host copy, nothing that waits for it). A captured loop traces the same draw into its
    graph instead (`harness.bench.running.capture.traced_normals`)."""
    check_draw_number(k)
    batch, groups = index.shape[0], -(-numel // WORDS)
    fused = fused_draw(index.device, draw_numbers(batch, numel))
    if fused is None:
        counter = torch.empty((WORDS, batch, groups), dtype=torch.int64, device=index.device)
        counter[0] = torch.arange(groups, dtype=torch.int64, device=index.device)
        counter[1] = k
        counter[2:] = index.T[:, :, None]
        normals = normal_from_bits(philox_rounds(*counter.unbind(0), round_keys), dtype)
    else:  # k as a tensor, not a constant: one compilation for every draw
        draw = torch.full((), k, dtype=torch.int64, device=index.device)
        normals = fused(index, round_keys, draw, groups, dtype)
    flat = normals.reshape(batch, groups * WORDS)
    return flat if numel == groups * WORDS else flat[:, :numel]  # the last counter's rest
