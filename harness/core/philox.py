"""Philox4x32-10, a counter-based random number generator, in vectorised tensor ops.

A counter-based generator is a keyed bijection of its counter (Salmon, Moraes, Dror and
Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"): the 128 random bits at counter
c under key k are philox(c, k), computed independently for every counter. There is no
state to seed, advance or split, so every (seed, sample, draw, element) gets its own bits
in one batched computation on any device: the generator behind cuRAND's and JAX's
per-thread streams. Philox4x32 with 10 rounds is the variant the authors recommend (it
passes TestU01's BigCrush with a margin of three rounds).

One round maps the counter words (c0, c1, c2, c3) and the key (k0, k1) to

    (hi(M1 c2) ^ c1 ^ k0,  lo(M1 c2),  hi(M0 c0) ^ c3 ^ k1,  lo(M0 c0)),

with hi/lo the upper and lower 32 bits of the 64-bit product; the key is bumped by the
Weyl constants (W0, W1) between rounds. Torch has no unsigned 32-bit multiply, so the
words live in int64 tensors: the product of two 32-bit words wraps modulo 2^64, which
keeps its lower 64 bits (all of them) exact; an arithmetic shift and a mask give hi.

The rounds run on four separate int64 tensors, one per word. The low words are not
masked inside the rounds (they are only xored into words that are, and masking commutes
with xor), so a round is two multiplies, two shifts, four xors and two masks, all but
the multiplies and shifts in place. On the CPU this runs at about 100 tensor operations
per four normals; that, not the transform, is the generator's cost there (on a GPU the
same operations are memory-bound kernels).

`normal_from_bits` turns the words into standard normals with the Box-Muller transform,
as cuRAND's `curand_normal4` does: two words make two normals. It is two steps, so that a
compiled draw (`harness.core.fused_noise`) can fuse the first with the generator and
leave the second, whose log, cos and sin differ between libraries in the last bits, to
the eager operations every draw uses: `box_muller_inputs` (words to the uniform u and
the angle, exact in any implementation) and `box_muller` (those to normals).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

#: Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011, Section 3.3).
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK32 = 0xFFFFFFFF
#: Each counter gives four 32-bit words, i.e. four normals.
WORDS = 4


def key_schedule(key: tuple[int, int], rounds: int = ROUNDS) -> list[tuple[int, int]]:
    """The round keys (k0 + r W0, k1 + r W1) mod 2^32, r = 0 .. rounds - 1."""
    k0, k1 = (int(k) & MASK32 for k in key)
    return [((k0 + r * W0) & MASK32, (k1 + r * W1) & MASK32) for r in range(rounds)]


def philox4x32(counter: Tensor, key: tuple[int, int], rounds: int = ROUNDS) -> Tensor:
    """Philox4x32-`rounds` of every counter: (4, *batch) int64 words in [0, 2^32) -> same.

    `counter[j]` holds word c_j of each counter (values outside [0, 2^32) give wrong
    bits: not checked, which would read the device); the result's row j is output
    word j. Runs on the counter's device without synchronising it.
    """
    if counter.shape[0] != WORDS or counter.dtype != torch.int64:
        raise ValueError(f"counter must be an int64 tensor of shape (4, ...), got "
                         f"{counter.dtype} {tuple(counter.shape)}")
    return torch.stack(philox_words(counter, key, rounds))


def philox_words(counter: Tensor, key: tuple[int, int], rounds: int = ROUNDS
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`philox4x32` as four separate word tensors (no stacking copy)."""
    return philox_rounds(*counter.unbind(0), key_schedule(key, rounds))


def philox_rounds(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor,
                  round_keys: Iterable[tuple[int | Tensor, int | Tensor]]
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The rounds on counter words c0 .. c3 (int64, broadcastable), one per round key.

    A round key is a pair of ints or of int64 scalar tensors: a compiled caller passes
    tensors, so that one compiled kernel serves every seed. The inputs are not modified.
    """
    for k0, k1 in round_keys:
        lo0, lo1 = c0 * M0, c2 * M1          # 64-bit products; low halves: c3', c1'
        c0 = lo1 >> 32                       # hi(M1 c2), sign bits above bit 31
        c0 ^= c1
        c0 ^= k0
        c0 &= MASK32
        c2 = lo0 >> 32                       # hi(M0 c0)
        c2 ^= c3
        c2 ^= k1
        c2 &= MASK32
        c1, c3 = lo1, lo0
    return c0, c1 & MASK32, c2, c3 & MASK32


def normal_from_bits(bits: Sequence[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals from 32-bit words (4, *batch) by Box-Muller: (*batch, 4).

    `bits` is a (4, *batch) tensor or four (*batch) tensors, words w0 .. w3.

    Words (w0, w1) give the pair (r cos theta, r sin theta) with u = (w0 + 1) / 2^32 in
    (0, 1], r = sqrt(-2 log u) and theta = 2 pi w1 / 2^32; (w2, w3) give the next pair.
    The largest |normal| is sqrt(64 log 2) = 6.66 (u = 2^-32), a tail of probability
    3e-11 left out. Computed in float32 whatever `dtype` (as cuRAND's `curand_normal4`),
    then cast: the same numbers in every dtype, to its rounding.
    """
    return box_muller(*box_muller_inputs(bits), dtype)


def box_muller_inputs(bits: Sequence[Tensor], dim: int = -1) -> tuple[Tensor, Tensor]:
    """u and theta of both pairs of words (w0, w1), (w2, w3): two float32 tensors, the
    pairs stacked along `dim` ((*batch, 2) by default; (2, *batch) with dim=0)."""
    uniform = torch.stack((bits[0], bits[2]), dim).float().add_(1.0).mul_(2.0**-32)
    angle = torch.stack((bits[1], bits[3]), dim).float().mul_(2 * math.pi * 2.0**-32)
    return uniform, angle


def box_muller(uniform: Tensor, angle: Tensor, dtype: torch.dtype = torch.float32
               ) -> Tensor:
    """Box-Muller's normals (r cos theta, r sin theta): (*batch, 2) twice -> (*batch, 4).

    Overwrites its inputs (they are a draw's temporaries). Always eager: these log, cos
    and sin are the reference numbers (`harness.core.fused_noise`).
    """
    radius = uniform.log_().mul_(-2.0).sqrt_()
    normals = torch.empty((*radius.shape, 2), dtype=torch.float32, device=radius.device)
    torch.mul(radius, angle.cos(), out=normals[..., 0])
    torch.mul(radius, angle.sin_(), out=normals[..., 1])
    normals = normals.flatten(-2)
    return normals if dtype == torch.float32 else normals.to(dtype)
