"""What to run: suite files (TOML, the schema, command-line overrides), their expansion
into trials (NFE budgets to steps, names) and the configuration hashes that identify a
trial's result. `suite` is the one import for all of it.

Layer 5.1, the bottom of the benchmark: it may import the layers below `harness.bench`,
and nothing else of the benchmark.
"""
