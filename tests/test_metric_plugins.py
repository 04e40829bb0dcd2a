"""The built-in metric plugins: registration, units, values on the oracle, omissions, and
that they are written against the public API alone."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import harness
import harness.metrics
import harness_plugins.guided_metrics as guided_plugin
import harness_plugins.metrics as metrics_plugin
import harness_plugins.sampler_error_metrics as sampler_error
from harness import (
    DataSpec,
    Metric,
    NetworkScoreModel,
    ParameterError,
    ReferenceData,
    SuiteContext,
    TrialContext,
)
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_plugins, load_plugins
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import VPSDE

NAMES = {"fid", "kid", "nll", "sliced_wasserstein", "mmd_oracle", "ode_error", "discrete_kl"}


@pytest.fixture(scope="module")
def registry():
    installed = get_plugins()
    if NAMES <= set(installed.metrics.names()):       # the entry point is installed
        return installed.metrics
    loaded = load_plugins(entry_points=[], extra=[("metrics", metrics_plugin),
                                                  ("sampler_error_metrics", sampler_error)])
    assert not loaded.failures, loaded.failures
    return loaded.metrics


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    model = ring_2d(VPSDE())
    small = {"num_reference": 600}
    options = {"fid": {**small, "cache_dir": str(tmp_path_factory.mktemp("cache"))},
               "kid": {**small, "subset_size": 100, "subsets": 5,
                       "cache_dir": str(tmp_path_factory.mktemp("cache"))},
               "nll": {"num_points": 24, "num_probes": 2},
               "ode_error": {"num_samples": 8}, "discrete_kl": {"num_samples": 16},
               "sliced_wasserstein": {**small, "num_projections": 64},
               "mmd_oracle": {"num_reference": 400}}
    return SuiteContext(model=model, model_name="gmm-ring-2d", device="cpu", options=options)


def _trial(suite, sampler_name, steps, n=300):
    sampler = get_plugins().samplers.get(sampler_name)
    grid = make_grid(suite.model.sde, "karras", steps)
    params = sampler.make_params()
    samples = generate(suite.model, sampler, grid, 0, range(n), params=params)
    return TrialContext(suite=suite, sampler=sampler, params=params, grid=grid, seed=0,
                        samples=samples)


def test_every_builtin_metric_is_registered_with_unit_and_direction(registry):
    assert NAMES <= set(registry.names())
    for name in NAMES:
        metric = registry.get(name)
        assert isinstance(metric, Metric) and metric.name == name
        assert isinstance(metric.unit, str) and metric.unit
        assert metric.higher_is_better is False and metric.description


def test_metrics_on_the_oracle_rank_a_good_sampler_above_a_poor_one(registry, suite):
    good, poor = _trial(suite, "heun", 30), _trial(suite, "euler", 3)
    for name in ("fid", "kid", "sliced_wasserstein", "mmd_oracle"):
        metric = registry.get(name)
        assert metric.applies_to(suite)
        metric.prepare(suite)
        values = metric.compute(good)
        assert math.isfinite(values[name])
        assert values[name] < metric.compute(poor)[name], name
    assert registry.get("fid").params()["fid_extractor"] == "identity"
    assert registry.get("fid").compute(good)["fid_num_samples"] == 300


def test_nll_is_a_model_property_in_bits_per_dim(registry, suite):
    metric = registry.get("nll")
    trial = _trial(suite, "heun", 10, n=8)
    values = metric.compute(trial)
    assert values["nll"] == pytest.approx(values["nll_nats"] / (2 * math.log(2)))
    assert values["nll_stderr"] > 0 and values["nll_nfe_mean"] > 10
    assert metric.params()["nll_solver"] == "dopri5"
    assert metric.params()["nll_eps"] == suite.model.sde.t_min
    # Another sampler gets the same numbers (computed once per suite).
    assert metric.compute(_trial(suite, "euler", 5, n=8)) == values


def test_sampler_error_metrics_only_for_deterministic_samplers(registry, suite):
    for name in ("ode_error", "discrete_kl"):
        metric = registry.get(name)
        assert metric.applies_to(suite)
        values = metric.compute(_trial(suite, "heun", 10, n=16))
        assert math.isfinite(values[name]) and values[f"{name}_stderr"] >= 0
        assert metric.compute(_trial(suite, "euler_maruyama", 10, n=8)) == {}


def test_options_are_checked_and_metrics_skip_models_without_reference_data(registry, suite):
    bad = SuiteContext(model=suite.model, model_name="x", device="cpu",
                       options={"nll": {"num_point": 3}})
    with pytest.raises(ParameterError, match="num_point"):
        registry.get("nll").compute(_trial(bad, "heun", 4, n=2))

    class Net(torch.nn.Module):
        def forward(self, x, t):
            return x

    other = NetworkScoreModel(Net(), VPSDE(), DataSpec(shape=(5,)))
    plain = SuiteContext(model=other, model_name="plain", device="cpu")
    # The sampler's own error needs the model alone, no reference data.
    own_error = {"ode_error", "discrete_kl"}
    for name in NAMES - own_error:
        assert not registry.get(name).applies_to(plain), name
    for name in own_error:
        assert registry.get(name).applies_to(plain), name


def test_oracle_distances_need_exact_reference_samples(registry):
    """Real data (the digits split) are not exact samples of the model: FID applies, the
    oracle distances do not."""

    class RealDataModel(NetworkScoreModel):
        reference_splits = ("test",)

        def _reference_data(self, split, num, seed):
            return ReferenceData("real:1", torch.zeros(4, 2))

    model = RealDataModel(torch.nn.Identity(), VPSDE(), DataSpec(shape=(2,)))
    context = SuiteContext(model=model, model_name="real", device="cpu")
    assert registry.get("fid").applies_to(context)
    assert not registry.get("sliced_wasserstein").applies_to(context)
    assert not registry.get("mmd_oracle").applies_to(context)


def test_extractor_option_is_checked(registry, suite):
    fid = registry.get("fid")
    for value, message in (("digits", "auto, identity, model, inception"),
                           ("model", "no feature extractor of its own")):
        context = SuiteContext(model=suite.model, model_name="ring", device="cpu",
                               options={"fid": {"extractor": value}})
        with pytest.raises(ParameterError, match=message):
            fid.prepare(context)


@pytest.mark.parametrize("plugin", [metrics_plugin, sampler_error, guided_plugin],
                         ids=lambda m: m.__name__)
def test_the_plugin_uses_only_the_public_api(plugin):
    """The built-in metric plugins import public names only: from `harness`, and from the
    documented back-ends `harness.metrics` (a function named as its module through that
    module); no internal module, and never a particular model's type."""
    source = Path(plugin.__file__).read_text()
    tree = ast.parse(source)
    internal = [ast.unparse(node) for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                and any(name.startswith("harness.") and not name.startswith("harness.metrics")
                        for name in _imported_modules(node))]
    assert not internal, f"imports of internal modules: {internal}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if node.module == "harness":
                assert alias.name in harness.__all__, f"harness.{alias.name} is not public"
            elif node.module == "harness.metrics":
                assert alias.name in harness.metrics.__all__, \
                    f"harness.metrics.{alias.name} is not public"
            elif (node.module or "").startswith("harness.metrics."):
                # Only the function its module is named after (`ode_error.ode_error`).
                assert node.module == f"harness.metrics.{alias.name}", ast.unparse(node)
    type_checks = [ast.unparse(node) for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                   and node.func.id in ("isinstance", "type")
                   and "model" in ast.unparse(node.args[0])]
    assert not type_checks, f"type checks on models: {type_checks}"
    assert "DIGITS_SPEC" not in source and "GaussianMixture" not in source


def _imported_modules(node):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]
