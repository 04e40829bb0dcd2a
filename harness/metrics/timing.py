"""Wall-clock measurement of a sampling run, with the network's share separated out.

GPU work is asynchronous: the clock is read only after `synchronize(device)`, which waits
for the device (`torch.cuda.synchronize`) and does nothing on the CPU. The first runs
(warm-up) pay for kernel selection, allocator growth and lazy initialisation and are not
timed. Next to the run's wall time the bare network forward on a batch of the same size
is timed (`model.denoise`, after its own warm-up), so that

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
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

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


@dataclass(frozen=True)
class Timing:
    """Timing of one sampling run of `batch_size` samples (means over `repeats` runs).

    `nfe_calls` is the number of network calls of one run (each on the whole batch),
    `nfe_per_sample` the evaluations per sample; `forward_s` the time of one bare
    network forward on a batch of the same size.
    """

    wall_s: float
    batch_size: int
    nfe_calls: float
    nfe_per_sample: float
    forward_s: float
    peak_memory_bytes: int
    peak_memory_kind: str
    warmup: int
    repeats: int
    device: str

    @property
    def seconds_per_sample(self) -> float:
        return self.wall_s / self.batch_size

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / self.wall_s

    @property
    def seconds_per_nfe(self) -> float:
        """Wall time per network call (one call evaluates the whole batch)."""
        return self.wall_s / self.nfe_calls if self.nfe_calls else float("nan")

    @property
    def network_s(self) -> float:
        """What the run's network calls alone would take: NFE calls x forward time."""
        return self.nfe_calls * self.forward_s

    @property
    def overhead(self) -> float:
        """wall / (NFE calls x forward): 1 means the sampler adds nothing to the network."""
        return self.wall_s / self.network_s if self.network_s else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(seconds_per_sample=self.seconds_per_sample,
                   samples_per_second=self.samples_per_second,
                   seconds_per_nfe=self.seconds_per_nfe, network_s=self.network_s,
                   overhead=self.overhead)
        return out


@torch.no_grad()
def forward_time(model: ScoreModel, batch_size: int, *, sigma: Optional[float] = None,
                 warmup: int = 2, repeats: int = 5, dtype: Optional[torch.dtype] = None
                 ) -> float:
    """Mean seconds of one bare `model.denoise` call on a batch of `batch_size`.

    Runs at noise level `sigma` (default: sigma at T/2; the cost of a network does not
    depend on it). The calls are not left in the model's NFE counter.
    """
    device = model.device
    dtype = dtype or model.dtype
    sigma = float(model.sde.sigma(model.sde.T / 2)) if sigma is None else float(sigma)
    x = torch.randn(batch_size, *model.data.shape, device=device, dtype=dtype)
    calls, rows = model.nfe.calls, model.nfe.rows
    try:
        for _ in range(warmup):
            model.denoise(x, sigma)
        start = clock(device)
        for _ in range(repeats):
            model.denoise(x, sigma)
        return (clock(device) - start) / repeats
    finally:
        model.nfe.calls, model.nfe.rows = calls, rows


def time_sampling(run: Callable[[], Any], model: ScoreModel, batch_size: int, *,
                  warmup: int = 1, repeats: int = 1, forward_repeats: int = 5,
                  dtype: Optional[torch.dtype] = None) -> Timing:
    """Time `run()`, which must draw one batch of `batch_size` samples with `model`.

    `warmup` untimed runs first; then `repeats` timed runs, each between synchronised
    clock reads, with NFE counted at the model. The bare forward time is measured on
    the same device, dtype and batch size.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = model.device
    for _ in range(warmup):
        run()
    reset_peak_memory(device)
    calls_before, rows_before = model.nfe.calls, model.nfe.rows
    start = clock(device)
    for _ in range(repeats):
        run()
    wall = (clock(device) - start) / repeats
    calls = (model.nfe.calls - calls_before) / repeats
    rows = (model.nfe.rows - rows_before) / repeats
    memory, kind = peak_memory(device)
    forward = forward_time(model, batch_size, repeats=forward_repeats, dtype=dtype)
    return Timing(wall_s=wall, batch_size=batch_size, nfe_calls=calls,
                  nfe_per_sample=rows / batch_size, forward_s=forward,
                  peak_memory_bytes=memory, peak_memory_kind=kind, warmup=warmup,
                  repeats=repeats, device=str(device))
