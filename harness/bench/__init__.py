"""The benchmark, by concern: `configuration` (suites: TOML, overrides, trial expansion,
hashes), `running` (the plan and the runner that batches, seeds, times and isolates
failures), `recording` (the trial record and the sinks: local files, MLflow, plugins) and
`reporting` (tables, comparisons, plots built from what was recorded); exit statuses in
`exit_codes`. Running imports configuration and recording; reporting reads records.

Layer 5. It may import every layer below it; only the command line imports it.

Running a suite from Python, as `harness run` does (the command adds parsing, printing
and the exit status)::

    from harness.bench import load_model, load_suite, make_sinks, resolve_plan, run_plan
    suite = load_suite("default", plugins)
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    results = run_plan(plan, sinks)

These names load their modules on first use, so that importing one part of the
benchmark does not import the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_PUBLIC = {
    "load_suite": ".configuration.suite_files", "Suite": ".configuration.suite_schema",
    "Trial": ".configuration.trials", "Plan": ".running.plan",
    "resolve_plan": ".running.plan", "load_model": ".running.runner",
    "run_plan": ".running.runner", "Sinks": ".recording.sinks",
    "SinkContext": ".recording.sinks", "make_sinks": ".recording.sinks",
    "TrialRecord": ".recording.record", "TrialResult": ".recording.record",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'harness.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
