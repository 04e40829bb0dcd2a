"""Sampling loops never wait for the device: no host synchronisation per step.

On CUDA this is checked directly: `torch.cuda.set_sync_debug_mode("error")` makes every
synchronising call (`.item()`, `bool(tensor)`, blocking copies, ...) raise, around
`generate` for every registered sampler, and around the noise draws (Philox on the
device). Those tests skip without a GPU.

On every machine a proxy runs: the ops that read a tensor's value back to the host (and
would synchronise a GPU) are watched at the dispatcher while the CPU samples, so a sampler
or model that inspects tensor values per step fails here too, GPU or not.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness import generate, make_grid
from harness.core.noise import SampleNoise

from .conftest import all_sampler_names
from .tiny_unet import tiny_digits_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

#: aten ops whose result is read on the host: each one waits for the GPU.
HOST_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "equal", "allclose",
              "masked_select", "_unique2", "unique_dim", "unique_consecutive"}


class HostReads(TorchDispatchMode):
    """Records the host-reading ops dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _run(model, name: str, plugins, steps: int = 4, n: int = 8) -> torch.Tensor:
    sampler = plugins.samplers.get(name)
    return generate(model, sampler, make_grid(model.sde, "karras", steps), seed=0,
                    indices=range(n))


@pytest.mark.parametrize("name", all_sampler_names())
def test_sampling_reads_no_tensor_values_on_the_host(plugins, name):
    model = tiny_digits_model()
    with HostReads() as reads:
        x = _run(model, name, plugins)
    assert reads.seen == [], f"{name}: {reads.seen} inside the sampling loop"
    assert torch.isfinite(x).all()


def test_the_proxy_sees_a_per_step_item(plugins):
    """A model that calls `.item()` per evaluation is caught (the test above can fail)."""
    model = tiny_digits_model()
    inner = model._denoise

    def peeking(x, sigma):
        float(sigma[0])
        return inner(x, sigma)

    model._denoise = peeking
    with HostReads() as reads:
        _run(model, "euler", plugins, steps=3)
    assert reads.seen.count("_local_scalar_dense") == 3


@cuda
@pytest.mark.parametrize("name", all_sampler_names())
def test_no_host_synchronisation_per_step_on_cuda(plugins, name):
    model = tiny_digits_model("cuda")
    _run(model, name, plugins)  # warm-up: library handles, allocator, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = _run(model, name, plugins, steps=20)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda" and torch.isfinite(x).all()


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_draws_do_not_synchronise_and_match_the_cpu(dtype):
    noise = SampleNoise(0, range(32), (1, 8, 8), device="cuda", dtype=dtype)
    noise()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        draws = [noise() for _ in range(10)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    on_cpu = SampleNoise(0, range(32), (1, 8, 8), dtype=dtype)
    on_cpu()
    for draw in draws:
        assert draw.dtype == dtype
        # Same integer bits; float32 log/cos/sin of the two libraries: the stated bound.
        torch.testing.assert_close(draw.cpu(), on_cpu(), rtol=0, atol=1e-5)


@cuda
@pytest.mark.parametrize("name", all_sampler_names())
def test_no_host_synchronisation_per_step_under_guidance_on_cuda(plugins, name):
    """A guided trial's loop: the shipped conditional network on a doubled batch, the
    labels bound once per batch, the lerp of its halves; none of it waits for the GPU."""
    from harness import CountedModel, GuidedModel
    from harness.core.labels import sample_labels

    model = CountedModel(plugins.models.get("digits-cond").build("cuda"))
    labels = sample_labels(0, range(8), model.num_classes, device="cuda")
    guided = CountedModel(GuidedModel(model, labels, 3.0))
    _run(guided, name, plugins)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = _run(guided, name, plugins, steps=20)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    assert model.nfe.rows == 2 * guided.nfe.rows  # every evaluation on a doubled batch
