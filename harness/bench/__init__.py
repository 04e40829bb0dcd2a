"""The benchmark: suites (TOML, overrides, trial expansion), the runner that batches,
seeds, times and isolates failures, the sinks that record results (local files, MLflow),
and the report (tables, plots) built from what was recorded.

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
    "load_suite": ".suite_files", "Suite": ".suite_schema", "Trial": ".trials",
    "Plan": ".plan", "resolve_plan": ".plan", "load_model": ".runner",
    "run_plan": ".runner", "Sinks": ".sinks", "SinkContext": ".sinks",
    "make_sinks": ".sinks", "TrialRecord": ".record", "TrialResult": ".record",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'harness.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
