"""Counting and timing network evaluations in a wrapper (`harness.core.counting`).

Expectations are independent of the wrapper: rows and calls tallied by hand from the
calls a test makes, the network's own calls (counted below the model's interface, in
`_denoise_labelled`), the sampler's declared NFE, and a fake clock whose
time moves only inside the network.
"""

from __future__ import annotations

import types

import pytest
import torch

from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.configuration.suite import build_suite
from harness.core import network_clock
from harness.core.counting import CountedModel, NFECounter
from harness.core.distributed import resolve_device
from harness.core.guidance import GuidedModel
from harness.core.network_clock import NetworkClock
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import make_sde
from harness.models.oracle import overlapping_2d, ring_2d
from harness.plugin.manager import get_plugins, load_plugins

from .plugins import evaluating_metric


def _x(model, rows: int) -> torch.Tensor:
    return torch.randn(rows, *model.data.shape, generator=torch.Generator().manual_seed(rows),
                       dtype=model.dtype)


# --- a trial's NFE is the sampler's, whatever its metrics evaluate ------------------------

def _trials(raw):
    plugins = load_plugins(extra=[("evaluating_metric", evaluating_metric)])
    suite = build_suite({"samplers": {"heun": {}, "euler": {}}, "steps": [4],
                         "num_samples": 12, "batch_size": 5, "device": "cpu",
                         "metrics": {"evaluates_the_model": {}}, **raw}, plugins)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    return plan.trials, run_plan(plan, Sinks([]), quiet=True)


def test_a_metric_that_evaluates_the_model_leaves_the_trials_nfe_alone():
    trials, results = _trials({"model": "gmm-ring-2d"})
    for trial, result in zip(trials, results, strict=True):
        assert result.status == FINISHED, result.error
        rows = 12 * 3 * evaluating_metric.REPEATS   # denoise, score, ode_drift per sample
        assert result.metrics["evaluates_the_model_rows"] == rows  # it did evaluate
        assert result.metrics["nfe"] == trial.nfe == result.metrics["nfe_expected"]
        assert not result.warnings, result.warnings


def test_a_guided_trials_counts_are_the_samplers_and_the_networks_whatever_a_metric_does():
    trials, results = _trials({"model": "gmm-cond-2d", "guidance": [1.0, 2.5]})
    assert {t.guidance for t in trials} == {1.0, 2.5}
    for trial, result in zip(trials, results, strict=True):
        assert result.status == FINISHED, result.error
        assert result.metrics["evaluates_the_model_rows"] == 12 * 4 * evaluating_metric.REPEATS
        assert result.metrics["nfe"] == trial.nfe
        rows = 1 if trial.guidance == 1.0 else 2
        assert result.metrics["network_evals"] == rows * trial.nfe
        assert result.metrics["network_calls"] == 3 * trial.nfe   # batches of 5, 5, 2


# --- what the wrapper counts -------------------------------------------------------------

def _count_labelled_rows(model) -> NFECounter:
    """The rows reaching the model's uncounted `_denoise_labelled`: what a guided run's
    network ran."""
    network, inner = NFECounter(), model._denoise_labelled

    def counting(x, sigma, labels):
        network.add(x.shape[0])
        return inner(x, sigma, labels)

    model._denoise_labelled = counting
    return network


def test_every_evaluation_through_the_wrapper_is_counted_in_calls_and_rows():
    model = overlapping_2d(make_sde("vp"))
    counted = CountedModel(model)
    labels = torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(counted.denoise(_x(model, 3), 0.7), model.denoise(_x(model, 3), 0.7))
    assert torch.equal(counted.denoise_labelled(_x(model, 5), 0.7, labels),
                       model.denoise_labelled(_x(model, 5), 0.7, labels))
    assert torch.equal(counted.score(_x(model, 4), 0.3), model.score(_x(model, 4), 0.3))
    assert torch.equal(counted.ode_drift(_x(model, 2), 0.3), model.ode_drift(_x(model, 2), 0.3))
    assert (counted.nfe.calls, counted.nfe.rows) == (4, 3 + 5 + 4 + 2)
    assert not hasattr(model, "nfe")  # the model itself keeps no count


def test_the_wrapper_is_the_wrapped_model_in_everything_but_the_count():
    model = ring_2d(make_sde("edm"))
    counted = CountedModel(model)
    assert (counted.sde, counted.data, counted.num_classes) == (
        model.sde, model.data, model.num_classes)
    assert (counted.device, counted.dtype) == (model.device, model.dtype)
    assert (counted.reference_splits, counted.reference_is_exact) == (
        model.reference_splits, model.reference_is_exact)
    ref, own = counted.reference_data("test", 5, seed=1), model.reference_data("test", 5, 1)
    assert ref.data_id == own.data_id and torch.equal(ref.data, own.data)
    assert counted.feature_extractor() is None and counted.classifier() is None
    assert counted.nfe.calls == 0  # reference data are no network evaluations


@pytest.mark.parametrize("w, rows", [(2.5, 2), (1.0, 1)])
def test_nested_wrappers_count_guided_evaluations_and_network_rows_apart(plugins, w, rows):
    model = overlapping_2d(make_sde("vp"))
    raw = _count_labelled_rows(model)
    heun = plugins.samplers.get("heun")
    grid = make_grid(model.sde, "karras", 4)
    labels = torch.tensor([0, 1, 2, 1])
    network = CountedModel(model)
    evaluations = CountedModel(GuidedModel(network, labels, w))   # as the runner has it
    generate(evaluations, heun, grid, 0, range(4))
    expected = heun.expected_nfe(4, heun.make_params())
    assert (evaluations.nfe.calls, evaluations.nfe.rows) == (expected, 4 * expected)
    assert (network.nfe.calls, network.nfe.rows) == (expected, rows * 4 * expected)
    assert (raw.calls, raw.rows) == (network.nfe.calls, network.nfe.rows)


def test_a_counter_shared_by_wrappers_sums_their_calls():
    model = ring_2d(make_sde("vp"))
    shared = NFECounter()
    for rows in (5, 7):
        CountedModel(model, nfe=shared).denoise(_x(model, rows), 1.0)
    assert (shared.calls, shared.rows) == (2, 12)


# --- what the clock times ----------------------------------------------------------------

def test_the_clock_times_the_calls_through_the_wrapper_and_no_others(monkeypatch):
    """Time moves by one second inside every network call and nowhere else."""
    now = [0.0]
    monkeypatch.setattr(network_clock, "time", types.SimpleNamespace(
        perf_counter=lambda: now[0]))
    model = ring_2d(make_sde("edm"))
    for name in ("_denoise", "_score"):  # the oracle's score is its own, not via D

        def one_second(x, at, _inner=getattr(model, name)):
            now[0] += 1.0
            return _inner(x, at)

        setattr(model, name, one_second)
    clock = NetworkClock(torch.device("cpu"))
    counted = CountedModel(model, clock)
    counted.denoise(_x(model, 3), 1.0)
    counted.score(_x(model, 3), 0.5)
    model.denoise(_x(model, 3), 1.0)   # the bare model: a metric's call, untimed
    assert CountedModel(model).denoise(_x(model, 2), 1.0).shape == (2, 2)  # no clock
    assert now[0] == 4.0 and clock.seconds() == 2.0


def test_nfe_counter_adds_calls_and_rows():
    counter = NFECounter()
    counter.add(4)
    counter.add(6)
    assert (counter.calls, counter.rows, counter.per_sample(5)) == (2, 10, 2.0)
    counter.reset()
    assert (counter.calls, counter.rows, counter.per_sample(0)) == (0, 0, 0.0)


@pytest.fixture
def plugins():
    return get_plugins()
