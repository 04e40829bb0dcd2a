"""The built-in sinks: every trial as a line of `trials.jsonl` in the report folder (the
copy of record, read by `--resume` and the report), and in MLflow; registered through
the same hook as a third party's."""

from __future__ import annotations

from harness import hookimpl
from harness.bench.recording.sinks import LocalSink
from harness.bench.recording.tracking import MLflowSink

harness_api_version = 1


def local(context):
    return LocalSink(context.out_dir)


def mlflow(context):
    """MLflow's sink, where the run is connected to a tracking store."""
    if context.client is None:
        return None
    return MLflowSink(context.client, context.tracking_uri, context.experiment)


@hookimpl
def harness_register_sinks(register):
    register("local", local, "every trial as a JSON line of <report folder>/trials.jsonl")
    register("mlflow", mlflow, "a parent run per suite and a nested run per trial in "
                               "the MLflow experiment")
