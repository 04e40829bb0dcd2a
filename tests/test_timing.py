"""Wall-clock: synchronised clock reads on CUDA (mocked here), overhead arithmetic."""

from __future__ import annotations

import time
from unittest import mock

import pytest
import torch
from torch import nn

from harness.metrics import timing
from harness.core.model import DataSpec, NetworkScoreModel
from harness.plugin.manager import get_sampler
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import EDMSDE
from harness.metrics.timing import Timing, forward_time, synchronize, time_sampling


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


def test_time_sampling_on_a_mocked_cuda_device_synchronises_and_reads_cuda_memory():
    model = _sleepy_model(0.0)
    with mock.patch.object(type(model), "device", new_callable=mock.PropertyMock,
                           return_value=torch.device("cuda", 0)), \
         mock.patch.object(timing.torch.cuda, "synchronize") as sync, \
         mock.patch.object(timing.torch.cuda, "reset_peak_memory_stats") as reset, \
         mock.patch.object(timing.torch.cuda, "max_memory_allocated", return_value=1234), \
         mock.patch.object(timing.torch, "randn", return_value=torch.zeros(4, 2)):
        result = time_sampling(lambda: model.denoise(torch.zeros(4, 2), 1.0), model, 4,
                               warmup=1, repeats=2, forward_repeats=3)
    # Two clock reads around the timed runs and two around the forward repeats.
    assert sync.call_count == 4
    reset.assert_called_once_with(torch.device("cuda", 0))
    assert result.peak_memory_bytes == 1234
    assert result.peak_memory_kind == "cuda_max_memory_allocated"
    assert result.nfe_calls == 1 and result.device == "cuda:0"


def test_overhead_arithmetic():
    t = Timing(wall_s=2.0, batch_size=100, nfe_calls=10, nfe_per_sample=10, forward_s=0.1,
               peak_memory_bytes=0, peak_memory_kind="x", warmup=1, repeats=1, device="cpu")
    assert t.network_s == pytest.approx(1.0)
    assert t.overhead == pytest.approx(2.0)            # 2 s / (10 calls x 0.1 s)
    assert t.seconds_per_sample == pytest.approx(0.02)
    assert t.samples_per_second == pytest.approx(50.0)
    assert t.seconds_per_nfe == pytest.approx(0.2)
    assert t.to_dict()["overhead"] == pytest.approx(2.0)


def test_a_sampler_that_only_calls_the_network_has_overhead_near_one():
    model = _sleepy_model(0.02)
    grid = make_grid(model.sde, "karras", 4)
    euler = get_sampler("euler")
    result = time_sampling(lambda: generate(model, euler, grid, 0, range(8)), model, 8,
                           warmup=1, repeats=1, forward_repeats=3)
    assert result.nfe_calls == 4 and result.nfe_per_sample == 4
    assert result.forward_s >= 0.02
    assert 0.9 < result.overhead < 1.6
    assert result.peak_memory_kind == "process_lifetime_peak_rss"
    assert result.peak_memory_bytes > 10 * 2**20
    # The forward measurement leaves the model's NFE counter as it was.
    assert model.nfe.calls == 4 * 2


def test_forward_time_does_not_count_as_nfe():
    model = _sleepy_model(0.0)
    model.nfe.add(3)
    forward_time(model, 5, warmup=1, repeats=2)
    assert (model.nfe.calls, model.nfe.rows) == (1, 3)
