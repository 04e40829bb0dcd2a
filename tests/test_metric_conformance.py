"""The metric kit passes every built-in metric and rejects each deliberately broken metric
(tests/plugins/broken_metrics.py) in the one check that names its fault, with its message.
"""

from __future__ import annotations

import contextlib
import re
from unittest import mock

import pytest
import torch

import harness_plugins.metrics as metrics_plugin
import harness_plugins.sampler_error_metrics as sampler_error_plugin
from harness import DataSpec, Metric, NetworkScoreModel, ParameterError, VPSDE
from harness.plugin.manager import load_plugins
from harness.testing import (
    METRIC_CHECKS,
    MetricConformanceError,
    check_metric,
    metric_conformance_test,
)
from harness.metrics.dinov2 import load_dinov2
from tests.plugins import broken_metrics, gaussian_images
from tests.test_feature_extractors import TINY, random_state

#: Small options, so that each built-in metric's kit run takes seconds.
OPTIONS = {
    "fid": {"num_reference": 500},
    "fd_dinov2": {"num_reference": 256},
    "fid_inf": {"num_reference": 500},
    "kid": {"num_reference": 500, "subset_size": 100, "subsets": 5},
    "nll": {"num_points": 8, "num_probes": 1, "rtol": 1e-3, "atol": 1e-3},
    "ode_error": {"num_samples": 4},
    "discrete_kl": {"num_samples": 4},
    "sliced_wasserstein": {"num_reference": 500, "num_projections": 32},
    "mmd_oracle": {"num_reference": 300},
}


@pytest.mark.parametrize("cls", metrics_plugin.METRICS + sampler_error_plugin.METRICS,
                         ids=lambda c: c.name)
def test_every_builtin_metric_passes_the_kit(cls, tmp_path):
    options = dict(OPTIONS[cls.name])
    if cls.name in ("fid", "kid", "fid_inf", "fd_dinov2"):
        options["cache_dir"] = str(tmp_path)  # no statistics from another run
    model = None  # the kit's
    with contextlib.ExitStack() as stack:
        if cls.name == "fd_dinov2":  # a small DINOv2 of the real code, random weights
            options["dinov2_weights"] = str(tmp_path / "dinov2_tiny.pth")
            torch.save(random_state(TINY), options["dinov2_weights"])
            stack.enter_context(mock.patch(
                "harness.metrics.feature_space.load_dinov2",
                lambda weights, expected_sha256: load_dinov2(weights, TINY,
                                                             expected_sha256)))
            model = gaussian_images.GaussianImages()  # it applies to images alone
        report = check_metric(cls, options=options, model=model)
    assert report.passed and [r.name for r in report.results] == list(METRIC_CHECKS)


#: metric -> (the check that must fail, a pattern of its message).
BROKEN = {
    "forgets_direction": ("declaration", r"higher_is_better must be declared True or False"),
    "unkeyed_values": ("values", r"keys \['stderr'\] do not start with 'unkeyed_values_'"),
    "private_generator": ("repeatable", r"the same samples gave \{private_generator: .*\} "
                                        r"and then, again in the same suite"),
    "ignores_the_trial": ("scope", r"two different trials .* both gave .* a property of "
                                   r"the model alone must declare per_suite = True"),
    "per_suite_reads_samples": ("scope", r"declares per_suite = True but fails on the "
                                         r"runner's per-suite trial"),
}


def test_every_broken_metric_is_listed():
    assert sorted(cls.name for cls in broken_metrics.BROKEN) == sorted(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_kit_names_the_one_broken_behaviour(name):
    loaded = load_plugins(entry_points=[], extra=[("broken_metrics", broken_metrics)])
    assert not loaded.failures, loaded.failures
    report = check_metric(loaded.metrics.get(name), raise_on_failure=False)
    check, message = BROKEN[name]
    assert [r.name for r in report.failures] == [check], str(report)
    assert re.search(message, report.result(check).message), report.result(check).message


def test_a_failure_raises_with_every_failed_check_named():
    with pytest.raises(MetricConformanceError, match=r"metric 'unkeyed_values' fails the "
                                                     r"conformance kit:\n  \[values\]"):
        check_metric(broken_metrics.UnkeyedValues)


def test_the_kit_leaves_the_global_generator_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_metric(broken_metrics.UnkeyedValues, checks=["values", "repeatable"],
                 raise_on_failure=False)
    assert torch.equal(torch.rand(3), expected)


def test_bad_input_is_refused_before_any_check():
    with pytest.raises(ParameterError, match="unknown checks.*available: declaration"):
        check_metric(broken_metrics.UnkeyedValues, checks=["value"])
    with pytest.raises(ParameterError, match="expected a harness.Metric subclass"):
        check_metric(dict)
    model = NetworkScoreModel(torch.nn.Identity(), VPSDE(), DataSpec(shape=(2,)))
    with pytest.raises(ParameterError, match="'fid' does not apply to NetworkScoreModel"):
        check_metric(metrics_plugin.FIDMetric, model=model)
    with pytest.raises(ParameterError, match="name the metrics"):
        metric_conformance_test()


# The kit's own pytest helper, as a plugin author would use it.
test_helper_runs_the_kit = metric_conformance_test(
    metrics_plugin.SlicedWassersteinMetric, options=OPTIONS["sliced_wasserstein"])


def test_a_metric_instance_is_checked_as_it_is():
    class Radius(Metric):
        name, unit, higher_is_better = "radius", "1", False
        description = "mean distance from the origin"

        def compute(self, trial):
            return {"radius": broken_metrics.mean_radius(trial.samples)}

    assert check_metric(Radius()).passed


def test_a_conditional_models_trials_carry_balanced_labels_as_the_runners_do():
    """For a model with classes, every kit trial has sample i's balanced label for seed 0
    (harness.core.labels), so that class metrics can be checked; none otherwise."""
    from harness.core.labels import sample_labels
    from harness.models.oracle import ring_2d
    from tests.conditional_support import labelled_ring

    seen = []

    class Labels(Metric):
        name, unit, higher_is_better = "labels_seen", "1", True
        description = "mean of the samples, recording the trial's labels"

        def compute(self, trial):
            seen.append(trial.labels)
            return {self.name: float(trial.samples.mean())}

    assert check_metric(Labels, model=labelled_ring(), samples=40).passed
    balanced = sample_labels(0, range(40), 8)
    assert seen and all(torch.equal(labels, balanced) for labels in seen)
    assert sorted(torch.bincount(balanced).tolist()) == [5] * 8
    seen.clear()
    assert check_metric(Labels, model=ring_2d(VPSDE()), samples=40).passed
    assert seen and all(labels is None for labels in seen)
