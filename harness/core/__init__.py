"""The maths of sampling: processes, time grids, the model interface, the sampler contract,
per-sample noise, the generation loop, and the process-group helpers every layer shares.

Layer 1 of the harness. It may import `harness.errors` and third-party libraries only;
everything else in the harness builds on it.
"""
