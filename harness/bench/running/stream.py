"""A streamed trial: each batch, as it is drawn, goes where the trial needs it, and no
more of the samples than that is held (the suite's `stream`, `harness run --stream`).

A held trial keeps all N samples on the host until its metrics run: N x sample bytes
per copy (`harness.bench.running.guards`). A streamed one hands every batch of this
process's share, once checked, to `TrialStream.add`, which

* decodes it (a latent model's samples through its decoder, as a held trial decodes
  them, in the same batches in one process);
* feeds it to the extractor of every feature space the metrics declare
  (`Metric.feature_spaces`; `harness.metrics.streamed_features`, bit-identical to
  held extraction);
* keeps the rows of the first `keep` sample indices: the sample grid's and the most
  any metric reads of the raw samples (`Metric.samples_read`);
* writes the batch as PNG files when asked (`--save-samples`, EDM's layout; each
  process its own share).

None of this is sampling: `add` times itself on the device's synchronised clock
(`seconds`, logged as `stream_s`) and the runner takes it out of the trial's wall-clock,
so `wall_clock_s` and `overhead_ratio` (wall over network time of the same run) mean what
they mean in a held trial. On a GPU the allocator's peak is read before and reset after
each `add`, so `peak_memory_mb` is the sampler's, not the extractors'.

Memory is O(batch + CHUNK + keep) samples and O(N) features: the memory guard says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ...core.model import ScoreModel
from ...metrics.metric import Metric, SuiteContext
from ...metrics.streamed_features import StreamedFeatures
from ...metrics.timing import clock, peak_memory, reset_peak_memory
from ..configuration.suite import SuiteError
from ..recording.sample_images import write_sample_images

#: Samples of image data kept for the sample grid (`plots.sample_grid` draws the first 64).
GRID_IMAGES = 64
#: Points of flat data kept for the grid's scatter plot: enough to show the distribution.
GRID_POINTS = 10_000


def grid_samples(model: ScoreModel) -> int:
    """How many of the first samples the sample grid shows."""
    return GRID_IMAGES if len(model.data.shape) == 3 else GRID_POINTS


def samples_kept(metrics: list[Metric], suite: SuiteContext, num_samples: int) -> int:
    """How many of the first samples a streamed trial holds: the grid's and the most any
    metric reads; a metric that reads every sample is refused, before anything runs."""
    reads = {metric.name: metric.samples_read(suite) for metric in metrics}
    refused = sorted(name for name, count in reads.items() if count is None)
    if refused:
        verb = "reads" if len(refused) == 1 else "read"
        raise SuiteError(
            f"stream: metric(s) {', '.join(refused)} {verb} every sample of a trial, which "
            f"a streamed trial does not hold; run without --stream, leave them out, or "
            f"give them a subset (e.g. their num_samples option, where they have one)")
    return min(num_samples, max([grid_samples(suite.model), *reads.values()]))


class TrialStream:
    """Takes a streamed trial's batches as they are drawn (module docstring)."""

    def __init__(self, model: ScoreModel, device: Any, features: StreamedFeatures,
                 keep: int, images: Optional[Path] = None):
        self.model, self.device, self.features, self.keep = model, device, features, keep
        #: Where this process writes its samples as PNG files, or None.
        self.images = images
        self.kept: list[Tensor] = []
        self.written = 0
        self.warnings: list[str] = []
        #: Seconds spent in `add`, all of it (decoding included), and decoding alone.
        self.seconds = 0.0
        self.decode_seconds = 0.0
        #: The device allocator's peak while sampling (bytes; 0 on the CPU).
        self.sampling_peak = 0

    def add(self, indices: list[int], x: Tensor) -> None:
        """One checked batch, the samples `indices` (ascending) of this process."""
        start = clock(self.device)
        if self.device.type == "cuda":
            self.sampling_peak = max(self.sampling_peak, peak_memory(self.device)[0])
        rows = x.detach().to("cpu")
        if self.model.decodes:
            began = clock(self.device)
            with torch.no_grad():
                rows = self.model.decode(rows.to(self.device)).cpu()
            self.decode_seconds += clock(self.device) - began
        self.features.add(rows)
        wanted = sum(1 for index in indices if index < self.keep)
        self.kept.append(rows[:wanted].clone())  # a copy: a view would hold the batch
        if self.images is not None:
            self._write(rows, indices)
        reset_peak_memory(self.device)
        self.seconds += clock(self.device) - start

    def _write(self, rows: Tensor, indices: list[int]) -> None:
        """As for a held trial, a file that cannot be written is a warning, and writing
        stops there."""
        try:
            self.written += write_sample_images(rows, indices, self.model.output_spec,
                                                self.images)
        except Exception as err:
            self.warnings.append(f"sample images not written to {self.images}: "
                                 f"{type(err).__name__}: {err}")
            self.images = None

    def kept_rows(self) -> Tensor:
        """This process's kept rows (its share of the first `keep` samples)."""
        return torch.cat(self.kept)
