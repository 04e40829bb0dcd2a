"""Memory guards: a suite that cannot fit is refused, or its batches split, before any
allocation, with a message saying how much it needs and how much there is.

The estimate, per batch of B samples of D values in the state's dtype:

    B x D x itemsize x LIVE_STATES    the sampler's tensors (state, denoised, derivatives,
                                      noise, the next state) alive at once
  + B x activations per sample        measured: the peak of live tensor memory during one
                                      forward pass of the network on PROBE_BATCH samples
  + N x D x itemsize x HELD_COPIES    all N samples of a trial, held on the CPU while the
                                      batches are concatenated, gathered and measured

A streamed trial (`harness.bench.running.stream`) holds no N samples: in place of the
last term,

  + (G + CHUNK + B) x D x itemsize x HELD_COPIES
                                      the samples it keeps (the grid's G), the rows
                                      waiting for a full chunk of the extractors, the batch
  + N x sum(F) x 8 x 2                 the features of every feature space (F values
                                      each), float64: this process's and the gathered
                                      matrix
  + METRIC_MATRICES x max(F)^2 x 8     FID's working memory: covariances, their roots
    + 2 x CHUNK_ELEMENTS x 8           and eigenvectors, and its replicates' blocks
                                      (`harness.metrics.feature_replicates`)

which is O(batch + features), not O(N x D): FID-50k of 3x256x256 images is 39 GB per
held copy, and streamed with FID and FD_DINOv2 (2,048 + 1,024 features) about 3.3 GB
(`benchmarks/scale_evaluation.py` measured 3.2 GiB at 64x64, its prediction 3.7).
The plan, made before the metrics load their extractors, assumes one space as wide as
InceptionV3's (`ASSUMED_FEATURE_WIDTHS`) for a streamed trial, and counts only the
samples of a held one; once the metrics are loaded the runner checks again with the
widths they declare (`check_trial_host_memory`), adding to a held trial's samples the
same features and working matrices, before any sample is drawn.
(A metric that reads raw samples keeps the subset it declares on top:
`Metric.samples_read`.)

Either is compared with `HEADROOM` of what is available (the device's free memory for a
GPU, the system's available memory for the CPU). A batch size is a memory setting, not
part of a result (samples are seeded per sample), so a batch that is too large is split
to the largest that fits; only samples that cannot be held at all are refused.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ...metrics.feature_replicates import CHUNK_ELEMENTS as REPLICATE_CHUNK_ELEMENTS
from ...metrics.streamed_features import CHUNK
from ..configuration.suite import SuiteError
from .stream import grid_samples

LIVE_STATES = 6
HELD_COPIES = 3
PROBE_BATCH = 4
#: The feature spaces a streamed plan assumes before the metrics are loaded: one of
#: InceptionV3's 2,048 features (the widest built-in).
ASSUMED_FEATURE_WIDTHS = (2048,)
#: Copies of a streamed trial's features: this process's and the gathered matrix.
FEATURE_COPIES = 2
#: F x F float64 matrices alive at once while FID and its replicates are computed (the
#: two covariances, a root, an eigendecomposition and its product, the quadratic form of
#: the derivative, a replicate's moments), counted generously.
METRIC_MATRICES = 12
#: Plan for at most this share of the memory available now.
HEADROOM = 0.8
GIB = 2.0 ** 30


def _size(count: float) -> str:
    """Bytes as MiB below a GiB, else GiB, with one decimal."""
    return f"{count / 2**20:,.1f} MiB" if count < GIB else f"{count / GIB:,.1f} GiB"


class MemoryGuardError(SuiteError):
    """The suite cannot fit in memory whatever the batch size."""


@dataclass(frozen=True)
class MemoryPlan:
    """The batch size to use, and the estimate behind it."""

    batch_size: int
    bytes_per_batch_sample: float
    bytes_held: float
    available: float
    where: str
    note: str = ""


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensors created inside it and still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _freed(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            # Views share their base's memory, already counted.
            if isinstance(tensor, torch.Tensor) and not tensor._is_view():
                size = tensor.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._freed, size)
        return out


def activation_bytes_per_sample(model: Any, dtype: torch.dtype,
                                batch: int = PROBE_BATCH) -> float:
    """Peak memory of one forward pass per sample, measured on a small batch."""
    device = model.device
    x = torch.randn(batch, *model.data.shape, device=device, dtype=dtype)
    sigma = float(model.sde.sigma(model.sde.T / 2))
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            model.denoise(x, sigma)
            peak = torch.cuda.max_memory_allocated(device) - before
        else:
            try:
                with _LiveTensorBytes() as tracker:
                    model.denoise(x, sigma)
                peak = tracker.peak
            except Exception as err:  # e.g. a compiled network refusing the mode
                print(f"warning: network activations not measured ({type(err).__name__}"
                      f": {err}); the memory guard counts the sampler's tensors only",
                      file=sys.stderr)
                peak = 0
    return max(peak, 0) / batch


def available_bytes(device: torch.device) -> float:
    """Memory that can be allocated now: free device memory, else available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _sample_bytes(model: Any, dtype: torch.dtype) -> int:
    """Bytes of one sample of `model`'s data in `dtype`."""
    return math.prod(model.data.shape) * torch.empty((), dtype=dtype).element_size()


def _streamed_kept(model: Any, num_samples: int, batch_size: int) -> int:
    """Samples a streamed trial holds at once: the grid's, a chunk waiting, a batch."""
    return min(num_samples, grid_samples(model) + CHUNK + batch_size)


def feature_bytes(num_samples: int, feature_widths: Sequence[int]) -> float:
    """The float64 features of spaces `feature_widths` wide and FID's working memory on
    them (module docstring): what a trial holds once its metrics run, streamed or held."""
    features = float(num_samples) * sum(feature_widths) * 8 * FEATURE_COPIES
    working = (METRIC_MATRICES * max(feature_widths, default=0) ** 2
               + 2 * REPLICATE_CHUNK_ELEMENTS) * 8
    return features + working


def streamed_host_bytes(model: Any, dtype: torch.dtype, num_samples: int,
                        batch_size: int, feature_widths: Sequence[int]) -> float:
    """What a streamed trial holds on the host (module docstring): the samples it keeps,
    the features of spaces `feature_widths` wide and the metrics' working memory."""
    kept = _streamed_kept(model, num_samples, batch_size)
    return (kept * _sample_bytes(model, dtype) * HELD_COPIES
            + feature_bytes(num_samples, feature_widths))


def trial_host_bytes(model: Any, dtype: torch.dtype, num_samples: int, batch_size: int,
                     feature_widths: Sequence[int], stream: bool) -> float:
    """What a trial holds on the host once its metrics' feature spaces are known: a held
    trial its N samples and, as a streamed one, their features and FID's matrices."""
    if stream:
        return streamed_host_bytes(model, dtype, num_samples, batch_size, feature_widths)
    return (float(num_samples) * _sample_bytes(model, dtype) * HELD_COPIES
            + feature_bytes(num_samples, feature_widths))


def check_trial_host_memory(model: Any, dtype: torch.dtype, num_samples: int,
                            batch_size: int, feature_widths: Sequence[int], stream: bool,
                            available: Optional[float] = None) -> float:
    """The plan's check again once the metrics are loaded, with the widths of the feature
    spaces they declare (the plan assumed one of InceptionV3's for a streamed trial and
    none for a held one); the bytes held, or `MemoryGuardError` (nothing drawn yet)."""
    held = trial_host_bytes(model, dtype, num_samples, batch_size, feature_widths, stream)
    cpu = available if available is not None else available_bytes(torch.device("cpu"))
    if held > HEADROOM * cpu:
        kept = _streamed_kept(model, num_samples, batch_size) if stream else num_samples
        spaces = " + ".join(f"{w:,}" for w in feature_widths) or "no"
        how = "streamed " if stream else ""
        raise MemoryGuardError(
            f"num_samples = {num_samples:,} {how}needs about {_size(held)} of CPU memory "
            f"({kept:,} samples, and the float64 features of {len(feature_widths)} "
            f"feature space(s), {spaces} wide, with FID's working matrices), but "
            f"{_size(cpu)} is available; lower num_samples"
            + ("" if stream else " or stream the trials (--stream)")
            + " (nothing was sampled)")
    return held


def plan_memory(model: Any, dtype: torch.dtype, num_samples: int, batch_size: int,
                device: torch.device, samples_here: Optional[int] = None,
                available: Optional[dict[str, float]] = None,
                guided: bool = False, stream: bool = False) -> MemoryPlan:
    """The batch size that fits (`batch_size` or smaller), or `MemoryGuardError`.

    `samples_here` is this process's share of the samples (default: all);
    `available` overrides the measured memory ({"cpu": bytes, "device": bytes});
    `guided`: a guided evaluation runs the network on a doubled batch (its activations
    and its input count twice per sample); `stream`: streamed trials (module docstring).
    """
    per_sample = _sample_bytes(model, dtype)
    kept = _streamed_kept(model, num_samples, batch_size)
    streamed = streamed_host_bytes(model, dtype, num_samples, batch_size,
                                   ASSUMED_FEATURE_WIDTHS)
    held = streamed if stream else float(num_samples) * per_sample * HELD_COPIES
    cpu = (available or {}).get("cpu", available_bytes(torch.device("cpu")))
    if held > HEADROOM * cpu:
        if stream:
            raise MemoryGuardError(
                f"num_samples = {num_samples:,} streamed needs about {_size(held)} of CPU "
                f"memory ({kept:,} samples, and the float64 features of a feature space "
                f"as wide as InceptionV3's with FID's working matrices), but "
                f"{_size(cpu)} is available; lower num_samples (nothing was allocated)")
        fits = streamed <= HEADROOM * cpu
        raise MemoryGuardError(
            f"num_samples = {num_samples:,} needs about {_size(held)} of CPU memory "
            f"to hold the samples ({num_samples:,} x {per_sample:,} bytes x {HELD_COPIES} "
            f"copies), but {_size(cpu)} is available; lower num_samples"
            + (f", or stream the trials (--stream: about {_size(streamed)})" if fits
               else "") + " (nothing was allocated)")
    network = activation_bytes_per_sample(model, dtype) + (per_sample if guided else 0)
    per_batch_sample = per_sample * LIVE_STATES + network * (2 if guided else 1)
    if device.type == "cuda":
        room = HEADROOM * (available or {}).get("device", available_bytes(device))
        where = f"on {device}"
    else:
        room, where = HEADROOM * cpu - held, "of CPU memory"
    batch = min(batch_size, samples_here if samples_here is not None else num_samples)
    need = batch * per_batch_sample
    streaming = (f"streamed: about {_size(held)} held on the host (the features of a "
                 f"space as wide as InceptionV3's and {kept:,} samples), not "
                 f"{_size(float(num_samples) * per_sample * HELD_COPIES)}; "
                 if stream else "")
    plan = MemoryPlan(batch_size, per_batch_sample, held, room / HEADROOM, where,
                      streaming.removesuffix("; "))
    if need <= room:
        return plan
    fits = int(room // per_batch_sample)
    if fits < 1:
        raise MemoryGuardError(
            f"one sample needs about {_size(per_batch_sample)} {where} "
            f"(sampler state and network activations), more than the "
            f"{_size(room)} available; nothing was allocated")
    note = (f"{streaming}batch_size = {batch_size:,} would need about {_size(need)} "
            f"{where} ({_size(per_batch_sample)} per sample: sampler state and network "
            f"activations), {_size(room)} is available: using batch_size = "
            f"{fits:,} (batches change memory, not results)")
    return MemoryPlan(fits, per_batch_sample, held, room / HEADROOM, where, note)
