"""What is measured: the metric API (`Metric`, `TrialContext`, `SuiteContext`), the
probability-flow likelihood, FID/KID, two-sample distances, synchronised timing and the
sharded (torchrun) forms of these.

Layer 3. It may import `harness.models`, `harness.core` and `harness.errors`; it knows
nothing of suites, runners, sinks or MLflow.
"""
