"""A noise draw as two compiled kernels around ATen's log, sqrt, cos and sin.

Eager, a draw of `SampleNoise` is about a hundred element-wise tensor operations
(`harness.core.philox`), each a pass over memory and a dispatch: on the CPU one draw of
4096 x 64 normals cost 1.4-2 calls of the 64-D oracle. `torch.compile` (inductor: C++
loops on the CPU, Triton on CUDA) fuses

1. the counter construction, the ten rounds and the conversion of the words to
   Box-Muller's u and theta into one loop that keeps every intermediate word in
   registers (`draw_inputs`, with inductor's fusion limits lifted: `FUSE_ALL`) and
   writes u and theta as contiguous planes, one per pair of words, and
2. the products r cos theta and r sin theta, the interleaving of the four normals of a
   counter and the cast to the sampler's dtype into another (`normals_from`),

leaving the transcendental passes between them to ATen: r = sqrt(-2 log u), cos theta
and sin theta, each over contiguous memory.

Exactness. The integers are int64 multiplies that wrap modulo 2^64, arithmetic shifts,
xors and masks: the compiled code computes the same bits (checked at start-up, below,
and by `tests/test_fused_noise.py`), and so u and theta, which are exact conversions and
products of them; the second kernel multiplies and widens, each correctly rounded in
any IEEE implementation. log, sqrt, cos and sin are not compiled: ATen's come from vector
libraries (MKL, Sleef) that are not correctly rounded, and inductor's differ from them by
1-2 units in the last place on 8-27 % of the values (on this project's CPU, at any vector
width; even sqrt, which inductor rounds correctly and ATen does not), which would move
every committed number and make a sample's noise depend on which path drew it. With
ATen's between the kernels, a draw is bit-identical to the eager one on every device and
dtype.

Shapes are dynamic: one compilation serves every batch size, sample size, seed and draw
(and one per dtype). Inductor would compile a dimension of size 1 separately, so a batch
of one sample (the last of a run of 4097 in batches of 4096) or a sample of at most four
numbers (one counter) is drawn as two and cut. Compiling costs seconds, once per process
and device type, at the first compiled draw: the runner's untimed warm-up makes that
draw, so no timed trial pays it.

When. HARNESS_NOISE chooses: `auto` (the default) compiles draws of at least
`AUTO_MIN_NUMBERS` numbers (below that a draw costs well under a millisecond eagerly,
less than any network call it sits beside, and not worth the compile) when the probe
passes, and draws eagerly otherwise; `eager` never compiles; `compiled` compiles every
draw and requires the probe to pass (a failure raises). The probe, once per process and
device type: compile, draw a small known-answer case and compare it bit for bit with the
eager draw. `noise_backend(device, numbers)` says which path draws and why, for a
trial's logged parameters.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .philox import (
    MASK32,
    WORDS,
    box_muller_inputs,
    key_schedule,
    normal_from_bits,
    philox_rounds,
    philox_words,
)

#: The environment variable that chooses the path, and its values.
NOISE_ENV = "HARNESS_NOISE"
MODES = ("auto", "eager", "compiled")
#: `auto` compiles draws of at least this many numbers (a batch of 2048 64-D samples).
AUTO_MIN_NUMBERS = 2**17
_COMPILERS = {"cpu": "inductor C++", "cuda": "inductor Triton"}
_SAME_WIDTH_INTEGER = {torch.float32: torch.int32, torch.float64: torch.int64}
#: Inductor's limits on how much it recomputes in a consumer before writing a value to
#: memory, lifted for the draw: under the defaults it writes eleven of the rounds' int64
#: words to memory and reads them back (4096 x 16 counters: 0.60 ms for the words, 0.40
#: ms lifted, on this project's CPU). Inside one kernel a shared expression is computed
#: once, so lifting them recomputes nothing. Kernel structure only: the bits are the same
#: either way.
FUSE_ALL = {"realize_opcount_threshold": 2**31, "realize_reads_threshold": 2**31,
            "realize_acc_reads_threshold": 2**31}


def draw_inputs(index: Tensor, round_keys: Tensor, draw: Tensor, groups: int
                ) -> tuple[Tensor, Tensor]:
    """Box-Muller's u and theta of one draw of every sample, as planes: two float32
    (2, B, groups), the pairs (w0, w1) and (w2, w3) of each counter in planes 0 and 1."""
    return box_muller_inputs(draw_words(index, round_keys, draw, groups), dim=0)


def draw_words(index: Tensor, round_keys: Tensor, draw: Tensor, groups: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four Philox words of one draw of every sample, int64 (B, groups) each.

    Sample b's counters are (g, draw, index[b, 0], index[b, 1]) for g < groups
    (`harness.core.noise`); `index` is (B, 2) int64, `round_keys` (rounds, 2) int64 and
    `draw` an int64 scalar tensor, so that neither the seed nor the draw recompiles.
    """
    batch = index.shape[0]
    return philox_rounds(
        torch.arange(groups, dtype=torch.int64, device=index.device).expand(batch, groups),
        draw.expand(batch, groups), index[:, :1].expand(batch, groups),
        index[:, 1:].expand(batch, groups), round_keys)


def normals_from(radius: Tensor, cos: Tensor, sin: Tensor, dtype: torch.dtype) -> Tensor:
    """The normals (r cos theta, r sin theta) of both pairs, in the order of
    `harness.core.philox.box_muller`: three (2, B, groups) planes -> (B, 4 groups)."""
    return torch.stack((radius[0] * cos[0], radius[0] * sin[0],
                        radius[1] * cos[1], radius[1] * sin[1]), -1).flatten(1).to(dtype)


def round_key_tensor(seed: int, device: torch.device | str) -> Tensor:
    """The round keys of `seed` (key (seed mod 2^32, seed // 2^32)), (rounds, 2) int64."""
    keys = torch.tensor(key_schedule((seed & MASK32, seed >> 32)), dtype=torch.int64)
    if torch.device(device).type == "cuda":  # an asynchronous copy needs page-locked memory
        keys = keys.pin_memory()
    return keys.to(device, non_blocking=True)


@dataclass(frozen=True)
class FusedDraw:
    """One draw of every sample: two compiled kernels and ATen's log, sqrt, cos, sin."""

    inputs: object   # compiled `draw_inputs`
    normals: object  # compiled `normals_from`

    def __call__(self, index: Tensor, round_keys: Tensor, draw: Tensor, groups: int,
                 dtype: torch.dtype) -> Tensor:
        """Draw `draw` of samples `index` ((B, 2) words), (B, 4 groups) in `dtype`."""
        batch = index.shape[0]
        if batch < 2:  # see the module's docstring: no dimension of size 1
            index = torch.cat((index, index.new_zeros((2 - batch, 2))))
        uniform, angle = self.inputs(index, round_keys, draw, max(groups, 2))
        radius = uniform.log_().mul_(-2.0).sqrt_()
        cos = angle.cos()
        normals = self.normals(radius, cos, angle.sin_(), dtype)
        return normals[:batch, :WORDS * groups]


@dataclass(frozen=True)
class _Probe:
    """The outcome of trying the compiled draw on one device type."""

    draw: FusedDraw | None
    description: str


_probes: dict[str, _Probe] = {}


def mode() -> str:
    """The path HARNESS_NOISE asks for: auto, eager or compiled."""
    chosen = os.environ.get(NOISE_ENV, "auto").strip().lower() or "auto"
    if chosen not in MODES:
        raise ValueError(f"{NOISE_ENV}={chosen!r}: expected one of {', '.join(MODES)}")
    return chosen


def draw_numbers(batch: int, numel: int) -> int:
    """The numbers one draw computes for `batch` samples of `numel` numbers each: four
    per counter, the last counter's unused words included."""
    return batch * WORDS * -(-numel // WORDS)


def fused_draw(device: torch.device | str, numbers: int) -> FusedDraw | None:
    """The compiled draw for draws of `numbers` numbers on `device`, or None (eager)."""
    if _too_small(numbers):
        return None
    return _probe(torch.device(device).type).draw


def noise_backend(device: torch.device | str = "cpu",
                  numbers: int = AUTO_MIN_NUMBERS) -> str:
    """How draws of `numbers` numbers (`draw_numbers`) are computed on `device`:
    "compiled (...)" or "eager (reason)"."""
    if _too_small(numbers):
        return (f"eager (HARNESS_NOISE=auto compiles draws of {AUTO_MIN_NUMBERS} numbers "
                f"or more; these have {numbers})")
    return _probe(torch.device(device).type).description


def forget_probes() -> None:
    """Choose the path anew at the next draw (after HARNESS_NOISE changed in-process)."""
    _probes.clear()


def _too_small(numbers: int) -> bool:
    return mode() == "auto" and numbers < AUTO_MIN_NUMBERS


def _probe(device_type: str) -> _Probe:
    chosen = mode()
    probe = _probes.get(device_type)
    if probe is None:
        probe = _probes[device_type] = _try_compiling(device_type, chosen)
    if chosen == "compiled" and probe.draw is None:
        raise RuntimeError(f"{NOISE_ENV}=compiled, but the noise draw is "
                           f"{probe.description}")
    return probe


def _try_compiling(device_type: str, chosen: str) -> _Probe:
    if chosen == "eager":
        return _Probe(None, f"eager ({NOISE_ENV}=eager)")
    compiler = _COMPILERS.get(device_type)
    if compiler is None:
        return _Probe(None, f"eager (no compiler for {device_type})")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # torch's own deprecations, met while compiling
            warnings.simplefilter("ignore", DeprecationWarning)
            draw = FusedDraw(torch.compile(draw_inputs, dynamic=True, options=FUSE_ALL),
                             torch.compile(normals_from, dynamic=True, options=FUSE_ALL))
            mismatch = _known_answer_mismatch(draw, torch.device(device_type))
    except Exception as err:  # noqa: BLE001 - no C++ compiler or Triton, an unsupported op
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return _Probe(None, f"eager (torch.compile failed: {type(err).__name__}: "
                            f"{reason[:200]})")
    if mismatch:
        return _Probe(None, f"eager (compiled draw differs from eager: {mismatch})")
    seconds = time.perf_counter() - start
    return _Probe(draw, f"compiled ({compiler}, {seconds:.1f} s to compile once)")


def _known_answer_mismatch(draw: FusedDraw, device: torch.device) -> str:
    """"" if the compiled draw equals the eager one bit for bit on a small case, else what
    differs. Samples 0, 1 and 2^32 + 5 of a seed above 2^32: every counter and key word;
    float32 and float64."""
    seed, k, groups = 2**40 + 12345, 7, 5
    samples = (0, 1, 2**32 + 5)
    index = torch.tensor([(i & MASK32, i >> 32) for i in samples], dtype=torch.int64)
    shape = (len(samples), groups)
    counter = torch.stack((torch.arange(groups).expand(shape), torch.full(shape, k),
                           index[:, :1].expand(shape), index[:, 1:].expand(shape)))
    # Both on `device`: its eager log, cos and sin are the reference there.
    words = philox_words(counter.to(device), (seed & MASK32, seed >> 32))
    eager = normal_from_bits(words).reshape(len(samples), -1).cpu()
    for dtype in (torch.float32, torch.float64):
        got = draw(index.to(device), round_key_tensor(seed, device),
                   torch.tensor(k, dtype=torch.int64, device=device), groups, dtype).cpu()
        if got.shape != eager.shape:
            return f"shape {tuple(got.shape)} instead of {tuple(eager.shape)}"
        bits = _SAME_WIDTH_INTEGER[dtype]
        differ = int((got.view(bits) != eager.to(dtype).view(bits)).sum())
        if differ:
            return f"{differ} of {eager.numel()} {str(dtype)[6:]} normals"
    return ""
