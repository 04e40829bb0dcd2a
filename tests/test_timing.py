"""Wall-clock: synchronised clock reads on CUDA (mocked here), forward time, peak memory."""

from __future__ import annotations

import time
from unittest import mock

import torch
from torch import nn

from harness.metrics import timing
from harness.core.counting import CountedModel
from harness.core.model import DataSpec, NetworkScoreModel
from harness.core.sde import EDMSDE
from harness.metrics.timing import forward_time, synchronize


def test_synchronize_waits_on_cuda_devices_only():
    with mock.patch.object(timing.torch.cuda, "synchronize") as sync:
        synchronize(torch.device("cuda", 1))
        sync.assert_called_once_with(torch.device("cuda", 1))
        synchronize("cpu")
        synchronize(torch.device("cpu"))
        assert sync.call_count == 1


def test_every_clock_read_on_cuda_follows_a_synchronisation():
    events = []
    with mock.patch.object(timing.torch.cuda, "synchronize",
                           side_effect=lambda d: events.append("sync")), \
         mock.patch.object(timing.time, "perf_counter",
                           side_effect=lambda: events.append("clock") or float(len(events))):
        timing.clock("cuda:0")
        timing.clock(torch.device("cuda", 0))
    assert events == ["sync", "clock", "sync", "clock"]


class SleepyNetwork(nn.Module):
    """A 'network' that takes a fixed time per call: the sampler's own cost is tiny."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, c):
        time.sleep(self.seconds)
        return torch.zeros_like(x)


def _sleepy_model(seconds=0.01):
    return NetworkScoreModel(SleepyNetwork(seconds), EDMSDE(), DataSpec(shape=(2,)),
                             parametrization="eps")


def test_peak_memory_on_a_mocked_cuda_device_reads_the_allocator():
    device = torch.device("cuda", 0)
    with mock.patch.object(timing.torch.cuda, "reset_peak_memory_stats") as reset, \
         mock.patch.object(timing.torch.cuda, "max_memory_allocated", return_value=1234):
        timing.reset_peak_memory(device)
        reset.assert_called_once_with(device)
        assert timing.peak_memory("cuda:0") == (1234, "cuda_max_memory_allocated")


def test_peak_memory_on_the_cpu_is_the_process_lifetime_peak_rss():
    timing.reset_peak_memory("cpu")                      # nothing to reset on the CPU
    memory, kind = timing.peak_memory("cpu")
    assert kind == "process_lifetime_peak_rss"
    assert memory > 10 * 2**20                           # bytes, not KiB: torch alone is more


def test_forward_time_is_the_mean_of_the_timed_calls():
    model = _sleepy_model(0.02)
    assert 0.02 <= forward_time(model, 4, warmup=0, repeats=2) < 0.2


def test_forward_time_does_not_count_as_nfe():
    model = _sleepy_model(0.0)
    counted = CountedModel(model)  # a trial's count, as the runner keeps it
    counted.nfe.add(3)
    forward_time(model, 5, warmup=1, repeats=2)
    assert (counted.nfe.calls, counted.nfe.rows) == (1, 3)
