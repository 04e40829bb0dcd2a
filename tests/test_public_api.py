"""The public API a plugin author can hold in their head: `harness` exports the names
listed here and in the plugin guide's table, nothing more; the measurement back-ends are
the documented namespace `harness.metrics`; the guide mentions no name that is gone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import harness
import harness.bench
import harness.metrics

ROOT = Path(__file__).parent.parent
GUIDE = (ROOT / "docs" / "plugins.md").read_text()

#: Written out by hand: an addition to `harness.__all__` fails here until it is listed
#: (and in the guide's table, below).
EXPORTED = {
    "HarnessError", "ParameterError", "PluginError", "UnknownNameError",
    "hookimpl", "HARNESS_API_VERSION", "ModelSpec",
    "Sampler", "Capabilities", "Params", "NoParams", "param", "generate",
    "ScoreModel", "NetworkScoreModel", "DataSpec", "ReferenceData", "NULL_LABEL",
    "GuidedModel", "CountedModel", "NFECounter",
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "EDMSDE", "make_sde", "TimeGrid", "Schedule",
    "SCHEDULES", "make_grid", "sigma_range", "times_of_sigmas",
    "Metric", "SuiteContext", "TrialContext", "Bootstrap",
    "world_size", "local_rows", "gather_concat", "all_reduce_sum", "shared_failure",
}


def _guide_table() -> set[str]:
    section = GUIDE.split("## What `harness` exports", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines()
            if line.startswith("|") and "---" not in line][1:]  # the header row aside
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[2])}


def test_harness_exports_exactly_the_listed_names():
    assert set(harness.__all__) == EXPORTED
    assert len(harness.__all__) == len(EXPORTED)  # no name listed twice
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name


def test_the_guide_lists_every_exported_name():
    assert _guide_table() == EXPORTED


def test_the_public_namespace_holds_no_internal_helper():
    # Module attributes that are not exported must be submodules, dunders or the version.
    stray = {name for name in vars(harness) if not name.startswith("_")
             and name not in EXPORTED
             and not isinstance(getattr(harness, name), type(harness))}
    assert stray == set()


def test_the_guide_and_the_hook_reference_name_only_what_exists():
    texts = {"docs/plugins.md": GUIDE,
             "harness/hookspecs.py": (ROOT / "harness" / "hookspecs.py").read_text(),
             "README.md": (ROOT / "README.md").read_text()}
    for where, text in texts.items():
        for name in set(re.findall(r"\bharness\.([A-Za-z_]\w*)\b", text)):
            if name in EXPORTED or name == "__all__":
                continue
            try:  # else it must be a module of the package (harness.metrics, ...)
                importlib.import_module(f"harness.{name}")
            except ModuleNotFoundError:
                raise AssertionError(f"{where} names harness.{name}, which is neither "
                                     f"exported nor a module") from None


def test_the_back_ends_are_the_metrics_namespace():
    for name in harness.metrics.__all__:
        assert getattr(harness.metrics, name) is not None, name
    # What the built-in metric plugins need and a third-party metric may build on.
    assert {"FID", "KID", "ode_nll", "reference_stats", "postprocess", "TrialFeatures",
            "knn_radii", "class_hits", "sampler_log_density", "reference_solve"} <= set(
        harness.metrics.__all__)
    # No export hides a module of the namespace (`harness.metrics.ode_error` is the module,
    # whose function is `harness.metrics.ode_error.ode_error`).
    for name in ("ode_error", "discrete_kl", "fid_infinity", "class_fid", "class_accuracy",
                 "precision_recall", "feature_space"):
        module = importlib.import_module(f"harness.metrics.{name}")
        assert getattr(harness.metrics, name) is module
        assert callable(getattr(module, name))
    assert not set(harness.metrics.__all__) & (EXPORTED - {
        "Metric", "SuiteContext", "TrialContext", "Bootstrap"})


def test_running_a_suite_from_python_is_harness_bench():
    for name in ("load_suite", "resolve_plan", "run_plan", "make_sinks", "TrialRecord"):
        assert name in harness.bench.__all__
        assert callable(getattr(harness.bench, name))
