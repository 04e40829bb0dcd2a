"""The time a run spends inside its network calls, measured inside that same run.

A sampler's overhead is its wall time over the time its network evaluations take. Timing
the network separately (a bare forward pass before or after the run) compares two runs
on a shared machine and can put the ratio below its physical floor of 1; timing every
counted call of the run itself cannot, since those calls are a part of the run.

On a GPU each call records a pair of CUDA events and nothing waits for them until
`seconds()` is read after the run, so the sampling loop makes no host synchronisation; on
the CPU each call reads `time.perf_counter()` twice.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch


class NetworkClock:
    """Sums the time between entering and leaving a `with clock:` block, over many blocks.

    A `CountedModel` given the clock (`harness.core.counting`) enters it around every
    network evaluation it passes on; blocks do not nest.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._seconds = 0.0
        self._pending: list[tuple[Any, Any]] = []  # CUDA (start, end) events not yet read
        self._start: Optional[Any] = None

    def __enter__(self) -> "NetworkClock":
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((self._start, end))
        else:
            self._seconds += time.perf_counter() - self._start
        self._start = None

    def seconds(self) -> float:
        """The total so far; on a GPU this waits for the last recorded call to finish."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._pending) / 1e3
            self._pending.clear()
        return self._seconds
