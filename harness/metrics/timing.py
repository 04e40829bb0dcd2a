"""Synchronised clock reads, the bare network forward time and peak memory.

These are what the runner times a trial with. GPU work is asynchronous: the clock is
read only after `synchronize(device)`, which waits for the device
(`torch.cuda.synchronize`) and does nothing on the CPU. Next to a run's wall time the
bare network forward on a batch of the same size is timed (`forward_time`:
`model.denoise`, after its own warm-up), so that

    overhead = wall / (NFE calls x forward time)

says what the sampler costs beyond its network evaluations (1.0: nothing). Peak memory
is the CUDA allocator's peak (`max_memory_allocated`, reset before the timed run) on a
GPU, and on the CPU the process's peak resident set size, which on Linux is a peak over
the whole lifetime of the process (`ru_maxrss`), not of this run: hence its name.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Optional, Union

import torch

from ..core.model import ScoreModel

Device = Union[str, torch.device]


def _device(device: Device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def synchronize(device: Device) -> None:
    """Wait for all queued work on `device`; a no-op unless it is a CUDA device."""
    device = _device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: Device) -> float:
    """`time.perf_counter()` read after the device has finished its queued work."""
    synchronize(device)
    return time.perf_counter()


def reset_peak_memory(device: Device) -> None:
    device = _device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA peak allocated since the reset, or the process's
    lifetime peak RSS on the CPU."""
    device = _device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return int(rss * scale), "process_lifetime_peak_rss"


@torch.no_grad()
def forward_time(model: ScoreModel, batch_size: int, *, sigma: Optional[float] = None,
                 warmup: int = 2, repeats: int = 5, dtype: Optional[torch.dtype] = None
                 ) -> float:
    """Mean seconds of one bare `model.denoise` call on a batch of `batch_size`.

    Runs at noise level `sigma` (default: sigma at T/2; the cost of a network does not
    depend on it).
    """
    device = model.device
    dtype = dtype or model.dtype
    sigma = float(model.sde.sigma(model.sde.T / 2)) if sigma is None else float(sigma)
    x = torch.randn(batch_size, *model.data.shape, device=device, dtype=dtype)
    for _ in range(warmup):
        model.denoise(x, sigma)
    start = clock(device)
    for _ in range(repeats):
        model.denoise(x, sigma)
    return (clock(device) - start) / repeats

