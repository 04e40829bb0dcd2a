"""Recording what was measured: the one trial record (`record`), the sinks it goes to
(`sinks`: the local trials.jsonl, MLflow in `tracking`, any sink a plugin registers), and
writing safely (atomic files, the report folder's lock).

Layer 5.2: it may import `harness.bench.configuration` and the layers below.
"""
