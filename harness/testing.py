"""The conformance kits, for a plugin author's tests: what a sampler or a metric must pass
before its numbers mean anything.

One call runs a kit and raises a `ConformanceError` (an `AssertionError`) saying what is
wrong; one line makes it a pytest test, one case per plugin::

    from harness.testing import check_sampler, conformance_test
    print(check_sampler("dpmpp_2m"))            # or a `harness.Sampler` object
    test_conformance = conformance_test("dpmpp_2m", "ddim")

    from harness.testing import check_metric, metric_conformance_test
    test_metrics = metric_conformance_test("my_metric")

The sampler kit is `harness.plugin.sampler_kit` (registration, documentation, parameters,
output, seed, batch, nfe, capabilities, model, final_step, order, convergence), the metric
kit `harness.plugin.metric_kit` (declaration, values, repeatable, scope); both report
through `harness.plugin.check_report`. docs/plugins.md has the table of what each check
demands and the tolerances named here.
"""

from __future__ import annotations

from .plugin.check_report import CheckReport, CheckResult
from .plugin.metric_kit import (
    METRIC_CHECKS,
    MetricConformanceError,
    MetricReport,
    check_metric,
    metric_conformance_test,
)
from .plugin.sampler_kit import (
    BATCH_RTOL,
    CHECKS,
    MOMENT_Z,
    ORDER_TOL,
    SW_MARGIN,
    WEAK_ORDER_TOL,
    ConformanceError,
    ConformanceReport,
    check_sampler,
    conformance_test,
    kit_oracle,
)

__all__ = [
    "BATCH_RTOL", "CHECKS", "METRIC_CHECKS", "MOMENT_Z", "ORDER_TOL", "SW_MARGIN",
    "WEAK_ORDER_TOL", "CheckReport", "CheckResult", "ConformanceError",
    "ConformanceReport", "MetricConformanceError", "MetricReport", "check_metric",
    "check_sampler", "conformance_test", "kit_oracle", "metric_conformance_test",
]
