"""The compiled noise draw (`harness.core.fused_noise`) against the eager one and the
published Philox answers: the same integers and the same normals, bit for bit; and how
the path is chosen (the HARNESS_NOISE variable, the draw's size, the start-up probe and
its fallback)."""

from __future__ import annotations

import pytest
import torch

from harness.core import fused_noise
from harness.core.fused_noise import (
    AUTO_MIN_NUMBERS,
    NOISE_ENV,
    draw_words,
    fused_draw,
    noise_backend,
    round_key_tensor,
)
from harness.core.noise import SampleNoise
from harness.core.philox import MASK32, normal_from_bits, philox_rounds, philox_words

from .test_philox import _known_answers, _scalar_philox

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

#: (seed, first index, batch, sample shape): 64-bit seeds and indices, batch 1, samples
#: whose size is not a multiple of four (the last counter's unused words), one counter
#: per sample, and a batch that is no power of two.
CASES = [(0, 0, 300, (64,)), (2**40 + 3, 2**32 - 2, 5, (3, 5, 7)), (7, 11, 1, (9,)),
         (2**64 - 1, 2**64 - 6, 6, (2,)), (12345, 0, 4096, (64,))]
DRAWS = (0, 1, 2**32 - 2)


@pytest.fixture
def fresh_probe(monkeypatch):
    """Each test decides anew which path draws (the probe runs once per process)."""
    monkeypatch.delenv(NOISE_ENV, raising=False)
    fused_noise.forget_probes()
    yield monkeypatch
    fused_noise.forget_probes()


@pytest.fixture
def compiled(fresh_probe):
    """Every draw compiled, however small."""
    fresh_probe.setenv(NOISE_ENV, "compiled")
    return fresh_probe


def _eager_normals(seed: int, indices: range, shape: tuple, k: int) -> torch.Tensor:
    """Draw k as `harness.core.noise` defines it, by the eager generator alone."""
    numel = torch.Size(shape).numel()
    groups = -(-numel // 4)
    counter = torch.tensor([[[g, k, i & MASK32, i >> 32] for g in range(groups)]
                            for i in indices], dtype=torch.int64).permute(2, 0, 1)
    normals = normal_from_bits(philox_words(counter, (seed & MASK32, seed >> 32)))
    return normals.reshape(len(indices), -1)[:, :numel].reshape(len(indices), *shape)


@pytest.mark.parametrize("seed, first, batch, shape", CASES)
def test_compiled_draws_are_the_eager_draws_bit_for_bit(compiled, seed, first, batch,
                                                        shape):
    indices = range(first, first + batch)
    noise = SampleNoise(seed, indices, shape)
    assert noise_backend("cpu").startswith("compiled"), noise_backend("cpu")
    for k in DRAWS:
        got, expected = noise.draw(k), _eager_normals(seed, indices, shape, k)
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32)), k
    noise64 = SampleNoise(seed, indices, shape, dtype=torch.float64)
    expected = _eager_normals(seed, indices, shape, 1).double()
    assert torch.equal(noise64.draw(1).view(torch.int64), expected.view(torch.int64))


@pytest.mark.parametrize("seed, first, batch, shape", CASES)
def test_compiled_integers_are_the_scalar_definitions(seed, first, batch, shape):
    groups = -(-torch.Size(shape).numel() // 4)
    index = torch.tensor([(i & MASK32, i >> 32) for i in range(first, first + batch)])
    words = torch.compile(draw_words, dynamic=True)(
        index, round_key_tensor(seed, torch.device("cpu")),
        torch.tensor(DRAWS[-1]), groups)
    got = torch.stack(words, -1)  # (batch, groups, 4)
    key = (seed & MASK32, seed >> 32)
    for b in {0, batch // 2, batch - 1}:
        i = first + b
        for g in {0, groups - 1}:
            assert got[b, g].tolist() == _scalar_philox([g, DRAWS[-1], i & MASK32, i >> 32],
                                                        key)


@pytest.mark.parametrize("rounds, counter, key, expected", list(_known_answers()))
def test_known_answer_vectors_through_compiled_rounds(rounds, counter, key, expected):
    def words(counters, round_keys):
        return torch.stack(philox_rounds(*counters.unbind(0), round_keys))

    schedule = torch.tensor([((key[0] + r * 0x9E3779B9) & MASK32,
                              (key[1] + r * 0xBB67AE85) & MASK32) for r in range(rounds)])
    batch = torch.tensor([counter, [1, 2, 3, 4], counter], dtype=torch.int64).T
    out = torch.compile(words, dynamic=True)(batch, schedule)
    assert out[:, 0].tolist() == expected
    assert out[:, 2].tolist() == expected


def test_one_compilation_serves_every_batch_seed_and_draw(compiled):
    SampleNoise(0, range(8), (12,)).draw(0)  # the probe and a first shape
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed, batch, shape, k in [(1, 300, (64,), 5), (2**50, 17, (3, 3), 0),
                                      (9, 4096, (8,), 2**32 - 2), (4, 1, (5,), 1),
                                      (5, 6, (2,), 2), (6, 1, (1,), 3), (7, 0, (9,), 0)]:
            SampleNoise(seed, range(batch), shape).draw(k)


def _compile_must_not_run(*args, **kwargs):
    raise AssertionError("torch.compile called")


def test_the_environment_variable_forces_eager_draws(fresh_probe):
    fresh_probe.setenv(NOISE_ENV, "eager")
    fresh_probe.setattr(torch, "compile", _compile_must_not_run)
    noise = SampleNoise(3, range(AUTO_MIN_NUMBERS // 6 + 1), (6,))
    assert torch.equal(noise.draw(2)[:5], _eager_normals(3, range(5), (6,), 2))
    assert noise_backend("cpu") == f"eager ({NOISE_ENV}=eager)"


def test_auto_compiles_large_draws_only(fresh_probe):
    fresh_probe.setattr(torch, "compile", _compile_must_not_run)
    small = AUTO_MIN_NUMBERS - 4
    assert fused_draw("cpu", small) is None
    assert noise_backend("cpu", small) == (
        f"eager (HARNESS_NOISE=auto compiles draws of {AUTO_MIN_NUMBERS} numbers or more; "
        f"these have {small})")
    batch = AUTO_MIN_NUMBERS // 64 - 1  # 64-D samples, one sample below the threshold
    assert torch.equal(SampleNoise(3, range(batch), (64,)).draw(1)[:4],
                       _eager_normals(3, range(4), (64,), 1))

    fresh_probe.undo()
    fused_noise.forget_probes()
    assert fused_draw("cpu", AUTO_MIN_NUMBERS) is not None
    assert noise_backend("cpu", AUTO_MIN_NUMBERS).startswith("compiled (inductor C++, ")


def _failing_compile(*args, **kwargs):
    raise RuntimeError("no C++ compiler here\nsecond line")


def test_a_failed_compilation_falls_back_to_eager_with_its_reason(fresh_probe):
    fresh_probe.setattr(torch, "compile", _failing_compile)
    assert fused_draw("cpu", AUTO_MIN_NUMBERS) is None
    assert noise_backend("cpu") == ("eager (torch.compile failed: RuntimeError: "
                                    "no C++ compiler here)")


def _one_bit_off(index, round_keys, draw, groups):
    uniform, angle = fused_noise.draw_inputs(index, round_keys, draw, groups)
    angle[-1, -1, -1] = torch.nextafter(angle[-1, -1, -1], torch.tensor(7.0))
    return uniform, angle


def _normals_one_bit_off(radius, cos, sin, dtype):
    normals = fused_noise.normals_from(radius, cos, sin, dtype)
    normals[0, 0] = torch.nextafter(normals[0, 0], torch.tensor(7.0, dtype=dtype))
    return normals


@pytest.mark.parametrize("kernel, off, differs", [
    ("draw_inputs", _one_bit_off, "2 of 60 float32 normals"),  # its cos and its sin
    ("normals_from", _normals_one_bit_off, "1 of 60 float32 normals")])
def test_a_compiled_draw_that_differs_is_not_used(fresh_probe, kernel, off, differs):
    wrong = getattr(fused_noise, kernel)
    fresh_probe.setattr(torch, "compile", lambda fn, **kwargs: off if fn is wrong else fn)
    assert fused_draw("cpu", AUTO_MIN_NUMBERS) is None
    assert noise_backend("cpu") == f"eager (compiled draw differs from eager: {differs})"


def test_compiled_on_demand_fails_loudly_and_unknown_modes_are_refused(fresh_probe):
    fresh_probe.setattr(torch, "compile", _failing_compile)
    fresh_probe.setenv(NOISE_ENV, "compiled")
    with pytest.raises(RuntimeError, match="HARNESS_NOISE=compiled, but .* no C"):
        SampleNoise(3, range(5), (6,)).draw(0)
    fresh_probe.setenv(NOISE_ENV, "fast")
    with pytest.raises(ValueError, match="expected one of auto, eager, compiled"):
        noise_backend("cpu")


@cuda
def test_compiled_on_cuda_gives_the_cpu_integers_and_the_eager_cuda_normals(compiled):
    seed, indices, sample = 2**40 + 3, range(2**32 - 2, 2**32 + 298), (3, 5, 7)
    device = torch.device("cuda")
    groups = -(-torch.Size(sample).numel() // 4)
    index = torch.tensor([(i & MASK32, i >> 32) for i in indices])
    words = torch.compile(draw_words, dynamic=True)(
        index.to(device), round_key_tensor(seed, device),
        torch.tensor(5, device=device), groups)
    shape = (len(indices), groups)
    counter = torch.stack((torch.arange(groups).expand(shape), torch.full(shape, 5),
                           index[:, :1].expand(shape), index[:, 1:].expand(shape)))
    for got, expected in zip(words, philox_words(counter, (seed & MASK32, seed >> 32))):
        assert torch.equal(got.cpu(), expected)

    noise = SampleNoise(seed, indices, sample, device=device)
    backend = noise_backend(device)
    assert backend.startswith("compiled (inductor Triton"), backend
    compiled.setenv(NOISE_ENV, "eager")
    fused_noise.forget_probes()
    eager = SampleNoise(seed, indices, sample, device=device)
    assert torch.equal(noise.draw(5), eager.draw(5))
