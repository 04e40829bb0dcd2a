"""The benchmark: suites (TOML, overrides, trial expansion), the runner that batches,
seeds, times and isolates failures, the sinks that record results (local files, MLflow),
and the report (tables, plots) built from what was recorded.

Layer 5. It may import every layer below it; only the command line imports it.
"""
