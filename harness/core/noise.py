"""Per-sample random streams: sample i's noise depends only on (seed, i).

Every sample owns a generator seeded from (seed, index) through NumPy's SeedSequence,
so a sample is identical whether it is generated alone, in a batch of 64 or on another
process of a sharded run. Noise is drawn on the CPU in float32 and then moved, which
makes samples identical across devices and dtypes too (up to the arithmetic).

Drawing per sample costs one generator call per sample; to keep that off the sampling
loop's critical path each stream is drawn `block` steps at a time, straight into one
(pinned, for a GPU) host buffer that is copied to the device without waiting for it. The
block size is a constant of the stream, not of the batch, so it does not affect
reproducibility.

Deriving the seeds is vectorised: NumPy's `SeedSequence([seed, index])` costs about
0.1 ms per call, i.e. tens of milliseconds per batch before the first step, more than a
whole sampling run of a small network on a GPU. `sample_seeds` computes the same hash
(Melissa O'Neill's seed_seq, as NumPy implements it) for all indices at once with NumPy
integer arrays; `sample_seed` is the reference, and the tests check that they agree.
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


# Constants of NumPy's SeedSequence (numpy/random/bit_generator.pyx), pool of 4 words.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _MASK = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF
_ONE_WORD = 0xFFFFFFFF  # NumPy splits integers >= this into two 32-bit words


def sample_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """`[sample_seed(seed, i) for i in indices]`, computed for all indices at once.

    The entropy [seed, index] is mixed into a pool of four 32-bit words and two words
    are drawn from it, exactly as `SeedSequence.generate_state(2)`. The arithmetic is
    modulo 2^32, done in uint64 arrays (products of two 32-bit words fit) and masked.
    Values that NumPy would split into several words take the reference path.
    """
    indices = [int(i) for i in indices]
    if not 0 <= seed < _ONE_WORD or any(not 0 <= i < _ONE_WORD for i in indices):
        return [sample_seed(seed, i) for i in indices]
    u = np.uint64
    words = np.asarray(indices, dtype=np.uint64)
    hash_const = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ u(hash_const)
        hash_const = hash_const * _MULT_A & _MASK
        value = value * u(hash_const) & u(_MASK)
        return value ^ (value >> u(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = (u(_MIX_L) * x - u(_MIX_R) * y) & u(_MASK)  # uint64 wrap-around, masked
        return result ^ (result >> u(16))

    with np.errstate(over="ignore"):
        zeros = np.zeros_like(words)
        # The entropy fills the pool (the missing words hash zeros), then every word is
        # mixed into every other one.
        pool = [hashmix(zeros + u(seed)), hashmix(words), hashmix(zeros), hashmix(zeros)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        state, hash_b = [], _INIT_B
        for word in pool[:2]:
            value = word ^ u(hash_b)
            hash_b = hash_b * _MULT_B & _MASK
            value = value * u(hash_b) & u(_MASK)
            state.append(value ^ (value >> u(16)))
    return [(int(a) << 31) ^ int(b) for a, b in zip(state[0].tolist(), state[1].tolist())]


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
        self._generators = [torch.Generator().manual_seed(s)
                            for s in sample_seeds(self.seed, self.indices)]
        self._buffer: Tensor | None = None
        self._position = block

    def __len__(self) -> int:
        return len(self.indices)

    def _refill(self) -> None:
        # Each stream fills its own contiguous row: the same numbers as drawing it alone.
        # A fresh pinned buffer each time: the caching host allocator does not hand it out
        # again before the asynchronous copy from it has finished.
        size = (self.block, *self.shape)
        block = torch.empty((len(self._generators), *size),
                            pin_memory=self.device.type == "cuda")
        for row, generator in zip(block, self._generators):
            torch.randn(size, generator=generator, out=row)
        # Copy as float32 and convert on the device: a conversion requested together with
        # the copy may be done on the host, into pageable memory the copy then waits on.
        self._buffer = block.to(self.device, non_blocking=True).to(self.dtype)
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
