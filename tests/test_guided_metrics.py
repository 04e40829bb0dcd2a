"""The guided-sampling metric plugin (plugins/guided_metrics.py): class_accuracy,
class_fid, precision and recall through the metric contract, on a labelled Gaussian
mixture whose classes and Bayes classifier are exact, against values computed here with
numpy, scipy and scikit-learn."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import harness_plugins.guided_metrics as plugin
from harness import SuiteContext, TrialContext, VPSDE
from harness.metrics.bootstrap import Bootstrap
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_plugins, load_plugins
from harness.testing import METRIC_CHECKS, check_metric
from tests.conditional_support import LabelledMixture, labelled_ring
from tests.test_class_fid import scipy_fid
from tests.test_precision_recall import reference_precision_recall

NAMES = ("class_accuracy", "class_fid", "precision", "recall")
NUM_REFERENCE = 800


@pytest.fixture(scope="module")
def registry():
    installed = get_plugins()
    if set(NAMES) <= set(installed.metrics.names()):       # the entry point is installed
        return installed.metrics
    loaded = load_plugins(entry_points=[], extra=[("guided_metrics", plugin)])
    assert not loaded.failures, loaded.failures
    return loaded.metrics


def make_suite(model, tmp_path, **extra):
    options = {name: {"num_reference": NUM_REFERENCE, **extra.get(name, {})}
               for name in NAMES}
    for name in ("class_fid", "precision", "recall"):
        options[name]["cache_dir"] = str(tmp_path)
    return SuiteContext(model=model, model_name=type(model).__name__, device="cpu",
                        options=options)


def trial_of(suite, samples, labels=None, bootstrap=None):
    """A trial as the runner builds one for the real-data floor: no sampler or grid."""
    return TrialContext(suite=suite, sampler=None, params=None, grid=None, seed=0,
                        samples=samples, labels=labels, bootstrap=bootstrap)


def class_samples(model: LabelledMixture, n: int, seed: int):
    """Exact samples of planted classes: what an ideal conditional sampler returns."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, model.num_classes, (n,), generator=gen)
    return model.sample_class(labels, gen), labels


def bayes_predictions(model: LabelledMixture, x: torch.Tensor) -> np.ndarray:
    """argmax_k log w_k + log N(x; mu_k, diag v_k), with scipy's densities."""
    log_post = np.stack([
        math.log(float(w)) + multivariate_normal(mu.numpy(), np.diag(v.numpy())).logpdf(
            x.numpy())
        for w, mu, v in zip(model.weights, model.means, model.variances)], axis=1)
    return log_post.argmax(1)


def test_registered_through_the_entry_point_with_unit_and_direction(registry):
    for name in NAMES:
        metric = registry.get(name)
        assert metric.name == name and metric.description and metric.on_real_data
    assert registry.get("class_fid").higher_is_better is False
    assert registry.get("class_fid").unit == "FID"
    for name in ("class_accuracy", "precision", "recall"):
        assert registry.get(name).higher_is_better is True and registry.get(name).unit == "1"


@pytest.mark.parametrize("name", NAMES)
def test_each_passes_the_metric_kit(name, registry, tmp_path):
    options = {"num_reference": 500}
    if name != "class_accuracy":
        options["cache_dir"] = str(tmp_path)
    report = check_metric(registry.get(name), model=labelled_ring(), options=options)
    assert report.passed and [r.name for r in report.results] == list(METRIC_CHECKS)


def test_precision_and_recall_pass_the_kit_on_an_unconditional_model(registry, tmp_path):
    for name in ("precision", "recall"):
        assert check_metric(registry.get(name), options={
            "num_reference": 500, "cache_dir": str(tmp_path)}).passed


def test_the_class_metrics_apply_to_conditional_models_only(registry, tmp_path):
    plain = make_suite(ring_2d(VPSDE()), tmp_path)
    assert not registry.get("class_accuracy").applies_to(plain)
    assert not registry.get("class_fid").applies_to(plain)
    assert registry.get("precision").applies_to(plain) and registry.get("recall").applies_to(plain)
    blind = make_suite(labelled_ring(with_classifier=False), tmp_path)
    assert not registry.get("class_accuracy").applies_to(blind)
    assert registry.get("class_fid").applies_to(blind)


# --- class_accuracy ----------------------------------------------------------------------------

def test_class_accuracy_is_the_bayes_classifiers_agreement_with_the_labels(registry, tmp_path):
    model = labelled_ring(std=0.35)  # overlapping classes: the Bayes classifier errs
    suite = make_suite(model, tmp_path)
    metric = registry.get("class_accuracy")
    metric.prepare(suite)
    samples, labels = class_samples(model, 600, seed=1)
    boot = Bootstrap(600, replicates=8)
    values = metric.compute(trial_of(suite, samples, labels, boot))
    hits = bayes_predictions(model, samples) == labels.numpy()
    assert values == {"class_accuracy": hits.mean(), "class_accuracy_num_samples": 600.0}
    assert 0.5 < hits.mean() < 0.95
    expected = [hits[idx.numpy()].mean() for idx in boot.index_sets]
    assert boot.values["class_accuracy"] == pytest.approx(expected, abs=1e-15)
    # The ceiling: the classifier on the labelled reference data, once per suite.
    ref = model.reference_data("test", NUM_REFERENCE)
    ceiling = (bayes_predictions(model, ref.data) == ref.labels.numpy()).mean()
    params = metric.params()
    assert params["class_accuracy_reference_accuracy"] == round(ceiling, 6)
    assert params["class_accuracy_classifier"] == "bayes"
    assert params["class_accuracy_classifier_sha256"] == model.classifier().sha256
    assert params["class_accuracy_status"] == "ok"


def test_class_accuracy_with_labels_that_are_all_wrong_is_zero(registry, tmp_path):
    model = labelled_ring()
    suite = make_suite(model, tmp_path)
    samples, labels = class_samples(model, 100, seed=2)
    metric = registry.get("class_accuracy")
    metric.prepare(suite)
    assert metric.compute(trial_of(suite, samples, (labels + 4) % 8))["class_accuracy"] == 0


@pytest.mark.parametrize("name", ["class_accuracy", "class_fid"])
def test_a_trial_without_labels_gets_no_value_and_a_status(name, registry, tmp_path):
    model = labelled_ring()
    suite = make_suite(model, tmp_path)
    metric = registry.get(name)
    metric.prepare(suite)
    assert metric.compute(trial_of(suite, class_samples(model, 50, 3)[0])) == {}
    assert metric.params()[f"{name}_status"].startswith("no labels")


# --- class_fid ----------------------------------------------------------------------------------

def test_class_fid_is_the_mean_of_scipy_per_class_fids(registry, tmp_path):
    model = labelled_ring(components=4, std=0.2)
    suite = make_suite(model, tmp_path)
    metric = registry.get("class_fid")
    metric.prepare(suite)
    samples, labels = class_samples(model, 400, seed=4)
    samples = samples * 1.1  # a little off, so that every class has a distance
    values = metric.compute(trial_of(suite, samples, labels, Bootstrap(400, replicates=4)))
    ref = model.reference_data("test", NUM_REFERENCE)
    expected = {c: scipy_fid(samples[labels == c].numpy(), ref.data[ref.labels == c].numpy())
                for c in range(4)}
    for c in range(4):
        assert values[f"class_fid_{c}"] == pytest.approx(expected[c], rel=1e-8)
    assert values["class_fid"] == pytest.approx(np.mean(list(expected.values())), rel=1e-8)
    assert values["class_fid_num_classes"] == 4 and values["class_fid_num_samples"] == 400
    assert values["class_fid_min_class_samples"] == min(torch.bincount(labels).tolist())
    params = metric.params()
    assert params["class_fid_extractor"] == "identity" and params["class_fid_status"] == "ok"
    assert params["class_fid_singular_classes"] == "none"
    counts = torch.bincount(ref.labels).tolist()
    assert params["class_fid_reference_class_counts"] == ", ".join(
        f"{c}: {n}" for c, n in enumerate(counts))
    # Shuffled labels: every class's samples become a mixture of all four.
    shuffled = labels[torch.randperm(400, generator=torch.Generator().manual_seed(5))]
    assert metric.compute(trial_of(suite, samples, shuffled))["class_fid"] > 10 * values[
        "class_fid"]


def test_class_fid_with_too_few_samples_of_a_class_says_so(registry, tmp_path):
    model = labelled_ring(components=4)
    suite = make_suite(model, tmp_path)
    metric = registry.get("class_fid")
    metric.prepare(suite)
    samples, _ = class_samples(model, 7, seed=6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    assert metric.compute(trial_of(suite, samples, labels)) == {}
    assert "class 3: 1 generated" in metric.params()["class_fid_status"]


def test_class_fid_needs_labelled_reference_data(registry, tmp_path):
    class Unlabelled(LabelledMixture):
        def _reference_data(self, split, num, seed):
            ref = super()._reference_data(split, num, seed)
            return type(ref)(ref.data_id + ":unlabelled", ref.data, exact=True)

    suite = make_suite(Unlabelled(ring_2d(VPSDE())), tmp_path)
    with pytest.raises(Exception, match="needs labelled reference data"):
        registry.get("class_fid").prepare(suite)


# --- precision and recall ---------------------------------------------------------------------

def test_precision_and_recall_match_an_independent_knn_on_the_reference(registry, tmp_path):
    model = ring_2d(VPSDE())
    suite = make_suite(model, tmp_path, precision={"k": 5}, recall={"k": 5})
    gen = torch.Generator().manual_seed(7)
    samples = model.sample_clean(500, generator=gen) * 1.15  # a wider ring
    real = model.reference_data("test", NUM_REFERENCE).data
    expected_p, expected_r, _ = reference_precision_recall(real.numpy(), samples.numpy(), 5)
    boot = Bootstrap(500, replicates=6)
    values = {}
    for name in ("precision", "recall"):
        metric = registry.get(name)
        metric.prepare(suite)
        values.update(metric.compute(trial_of(suite, samples, bootstrap=boot)))
        params = metric.params()
        assert params[f"{name}_k"] == 5 and params[f"{name}_extractor"] == "identity"
        assert params[f"{name}_num_reference"] == NUM_REFERENCE
    assert values["precision"] == expected_p and values["recall"] == expected_r
    assert 0.05 < expected_p < 0.95 and 0.05 < expected_r < 0.95
    assert values["precision_num_samples"] == 500 and values["recall_num_reference"] == 800
    assert set(boot.values) == {"precision"}  # recall has no bootstrap (see its params)


def test_precision_and_recall_are_measured_in_the_fid_feature_space(registry, tmp_path):
    """A model with its own extractor: the metrics compare its features, as FID does."""

    class Squares(torch.nn.Module):
        name, num_features = "squares", 2
        sha256 = hashlib.sha256(b"squares").hexdigest()

        def forward(self, x):
            return x.square()

    class WithFeatures(LabelledMixture):
        def feature_extractor(self, device="cpu"):
            return Squares()

    model = WithFeatures(ring_2d(VPSDE()))
    suite = make_suite(model, tmp_path)
    samples = model.sample_clean(300, generator=torch.Generator().manual_seed(8))
    samples = samples * torch.tensor([1.0, -1.0], dtype=samples.dtype)  # same squares
    real = model.reference_data("test", NUM_REFERENCE).data
    expected = reference_precision_recall(real.square().numpy(), samples.square().numpy(), 3)
    for name, value in zip(("precision", "recall"), expected):
        metric = registry.get(name)
        metric.prepare(suite)
        assert metric.compute(trial_of(suite, samples))[name] == value
        assert metric.params()[f"{name}_extractor"] == "squares"
    fid = get_plugins().metrics.get("fid")
    suite.options["fid"] = {"num_reference": NUM_REFERENCE, "cache_dir": str(tmp_path)}
    fid.prepare(suite)
    assert fid.params()["fid_extractor"] == "squares"
    assert fid.params()["fid_extractor_sha256"] == metric.params()["recall_extractor_sha256"]


def test_k_is_checked(registry, tmp_path):
    for k in (0, 2.5, True, NUM_REFERENCE):
        suite = make_suite(ring_2d(VPSDE()), tmp_path, precision={"k": k})
        with pytest.raises(Exception, match="k"):
            registry.get("precision").prepare(suite)
