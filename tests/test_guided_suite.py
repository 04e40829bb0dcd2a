"""Guidance as a suite dimension: validation before any compute, trials per scale with
their own names and hashes, NFE counted at the network, samples independent of batching.

Expectations are independent of the runner: network rows of a guided evaluation are
counted here by wrapping the model's uncounted `_denoise_labelled`, and labels come from
`sample_labels`, whose own properties are tested in tests/test_labels.py.
"""

from __future__ import annotations

import pytest
import torch

from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.configuration.suite import (SuiteError, build_suite, check_conditional,
                                 resolve_trials)
from harness.core.distributed import resolve_device
from harness.core.labels import sample_labels
from harness.plugin.manager import get_plugins

BASE = {"model": "gmm-cond-2d", "model_options": {"sde": "edm"},
        "samplers": {"heun": {}, "euler_maruyama": {}}, "steps": [6],
        "num_samples": 12, "batch_size": 5, "device": "cpu", "dtype": "float64",
        "seeds": [3], "metrics": {}}


def _run(raw):
    plugins = get_plugins()
    suite = build_suite(raw, plugins)
    device = resolve_device("cpu")
    model = load_model(suite, plugins, device)
    raw_rows = []
    inner = model._denoise_labelled

    def counting(x, sigma, labels):  # below the counted interface: what the network ran
        raw_rows.append((x.shape[0], labels.clone()))
        return inner(x, sigma, labels)

    model._denoise_labelled = counting
    plan = resolve_plan(suite, plugins, model, device)
    results = run_plan(plan, Sinks([]), quiet=True)
    return plan.trials, results, raw_rows


def test_guided_trials_count_guided_evaluations_and_network_rows_apart():
    trials, results, _ = _run({**BASE, "guidance": [1.0, 2.5]})
    assert [t.name for t in trials] == [
        "heun-w=1-11nfe-seed3", "heun-w=2.5-11nfe-seed3",
        "euler_maruyama-w=1-6nfe-seed3", "euler_maruyama-w=2.5-6nfe-seed3"]
    for trial, result in zip(trials, results):
        assert result.status == FINISHED, result.error
        m = result.metrics
        assert m["nfe"] == trial.nfe                      # what the sampler called
        doubled = 1 if trial.guidance == 1.0 else 2
        assert m["network_evals"] == doubled * trial.nfe  # what the network ran
        batches = -(-12 // 5)
        assert m["network_calls"] == batches * trial.nfe  # one forward pass per call
        assert result.params["guidance"] == trial.guidance


def test_the_network_sees_each_samples_label_and_a_null_row_beside_it():
    _, results, raw_rows = _run({**BASE, "samplers": {"euler": {}}, "guidance": [2.0],
                                 "num_samples": 7, "batch_size": 7})
    assert results[0].status == FINISHED
    expected = sample_labels(3, range(7), 3)
    last_rows, last_labels = raw_rows[-1]
    assert last_rows == 14
    assert torch.equal(last_labels[:7], expected)
    assert torch.equal(last_labels[7:], torch.full((7,), -1))


def test_batch_size_changes_no_guided_sample():
    plugins = get_plugins()
    from harness.core.guidance import GuidedModel
    from harness.core.sampling import generate
    from harness.core.schedules import make_grid

    model = plugins.models.get("gmm-cond-2d").build("cpu", sde="vp")
    sampler = plugins.samplers.get("euler_maruyama")
    grid = make_grid(model.sde, "karras", 8)

    def draw(indices):
        labels = sample_labels(4, indices, model.num_classes)
        return generate(GuidedModel(model, labels, 3.0), sampler, grid, 4, indices)

    whole = draw(list(range(20)))
    parts = torch.cat([draw(list(range(i, min(i + 7, 20)))) for i in range(0, 20, 7)])
    strided = torch.empty_like(whole)
    for rank in range(3):
        strided[rank::3] = draw(list(range(20))[rank::3])
    assert torch.equal(whole, parts) and torch.equal(whole, strided)


def test_guidance_and_labels_are_refused_before_anything_is_loaded():
    plugins = get_plugins()
    with pytest.raises(SuiteError, match="'gmm-ring-2d' is not class-conditional.*"
                                         "conditional models: .*gmm-cond-2d"):
        build_suite({**BASE, "model": "gmm-ring-2d", "guidance": [2.0]}, plugins)
    with pytest.raises(SuiteError, match="samplers.heun.guidance"):
        build_suite({**BASE, "model": "gmm-ring-2d",
                     "samplers": {"heun": {"guidance": 2.0}}}, plugins)
    with pytest.raises(SuiteError, match=r"guidance\[0\] must be >= 0.0, got -1.0"):
        build_suite({**BASE, "guidance": [-1.0]}, plugins)
    with pytest.raises(SuiteError, match="labels: model 'gmm-cond-2d' has classes 0 .. 2"):
        build_suite({**BASE, "guidance": [2.0], "labels": [0, 3]}, plugins)
    with pytest.raises(SuiteError, match="labels are used only under guidance"):
        build_suite({**BASE, "labels": [0]}, plugins)


def test_a_model_whose_classes_are_known_only_once_loaded_is_checked_then():
    suite = build_suite({**BASE, "guidance": [2.0]}, get_plugins())
    check_conditional(suite, 3)
    with pytest.raises(SuiteError, match="not class-conditional"):
        check_conditional(suite, 0)


def test_each_scale_is_its_own_configuration_and_unguided_hashes_stand():
    plugins = get_plugins()
    unguided = resolve_trials(build_suite(BASE, plugins), plugins, {"name": "m"})
    guided = resolve_trials(build_suite({**BASE, "guidance": [1.0, 2.0]}, plugins),
                            plugins, {"name": "m"})
    hashes = {t.config_hash for t in guided}
    assert len(hashes) == len(guided) == 2 * len(unguided)
    assert not hashes & {t.config_hash for t in unguided}
    assert all("guidance" not in t.config for t in unguided)
    # Per-sampler scales replace the suite's.
    mixed = resolve_trials(build_suite({**BASE, "guidance": [1.0],
                                        "samplers": {"heun": {"guidance": [4.0, 8.0]}}},
                                       plugins), plugins, {"name": "m"})
    assert sorted(t.guidance for t in mixed) == [4.0, 8.0]
