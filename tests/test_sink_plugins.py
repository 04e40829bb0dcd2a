"""Sinks as plugins: a third party's sink, registered through `harness_register_sinks`,
records a real `harness run` beside the built-in ones.

It receives every trial, FINISHED and FAILED, as the very record `trials.jsonl` holds;
the guide's CSV sink works as printed; a sink that raises in `trial_ended`, or whose
factory raises, is reported and left out while `trials.jsonl` and MLflow stay complete,
and the run exits with status 3; a factory that returns None stays out quietly. The
built-in sinks are registrations of the plugin `harness_plugins.sinks`, and `harness
plugins` lists every sink with its origin.
"""

from __future__ import annotations

import csv
import json
import re
import types
from pathlib import Path

import pytest

from harness import hookimpl
from harness.bench import exit_codes
from harness.bench.recording.record import TrialRecord
from harness.bench.recording.sinks import SinkContext, make_sinks, read_lines
from harness.commands.plugins import describe, format_text
from harness.plugin import manager as plugin_manager
from tests.bench_support import bench_environment, harness, trial_runs, write_suite
from tests.plugins import bench_plugins

ROOT = Path(__file__).resolve().parents[1]
URI = "sqlite:///mlflow.db"
SUITE = """
experiment = "{experiment}"
model = "gmm-ring-2d"
steps = [2, 3]
seeds = [0]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.euler]
{more}
[metrics.msn]
"""


class Recorder:
    """A third party's sink: keeps what it is given."""

    def __init__(self, context):
        self.context = context
        self.started: list[str] = []
        self.ended: list[TrialRecord] = []
        Recorder.made.append(self)

    def trial_started(self, trial):
        self.started.append(trial.name)

    def trial_ended(self, record):
        self.ended.append(record)

    made: list[Recorder] = []


class RaisesAtTheEnd:
    def trial_ended(self, record):
        raise RuntimeError("the third-party store refused the trial")


def refuses(context):
    raise ConnectionError("no route to the third-party store")


class SinkPlugin:
    """A plugin object registering sink factories by name, as a module would."""

    harness_api_version = 1

    def __init__(self, **factories):
        self.factories = factories

    @hookimpl
    def harness_register_sinks(self, register):
        for name, make in self.factories.items():
            register(name, make, f"the test's {name} sink")


def guide_csv_plugin() -> types.ModuleType:
    """The CSV sink of docs/plugins.md, as printed there."""
    guide = (ROOT / "docs/plugins.md").read_text()
    section = guide[guide.index("## Recording results elsewhere: a sink plugin"):]
    (code,) = re.findall(r"^```python\n(.*?)^```$", section.split("\n## ")[0],
                         flags=re.MULTILINE | re.DOTALL)
    module = types.ModuleType("csv_sink_from_the_guide")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    return module


@pytest.fixture
def run_with(monkeypatch, tmp_path):
    """`run_with(experiment, more_samplers, **plugins)`: a `harness run` of SUITE with
    these plugins loaded beside the installed ones; returns the exit status and the
    report folder."""
    environment = bench_environment(monkeypatch, tmp_path)
    next(environment)
    Recorder.made.clear()

    def run(experiment: str, more: str = "", **plugins) -> tuple[int, Path]:
        loaded = plugin_manager.load_plugins(
            extra=[("bench_plugins", bench_plugins), *plugins.items()])
        assert not loaded.failures, loaded.failures
        monkeypatch.setattr(plugin_manager, "_default", loaded)
        suite = write_suite(tmp_path / f"{experiment}.toml",
                            SUITE.format(experiment=experiment, more=more))
        code = harness("run", suite, "--quiet", "--out", tmp_path / "runs")
        return code, tmp_path / "runs" / experiment

    yield run
    next(environment, None)


def recorded(folder: Path, kind: str = "trial") -> list[dict]:
    return [line for line in read_lines(folder / "trials.jsonl") if line["kind"] == kind]


def test_a_sink_plugin_receives_every_trial_as_trials_jsonl_holds_it(run_with):
    code, folder = run_with("third", "[samplers.raising]\n",
                            third=SinkPlugin(recorder=Recorder), csv=guide_csv_plugin())
    assert code == exit_codes.TRIALS_FAILED
    (recorder,) = Recorder.made
    assert recorder.context.out_dir == folder and recorder.context.experiment == "third"
    lines = recorded(folder)
    assert sorted(line["status"] for line in lines) == ["FAILED"] * 2 + ["FINISHED"] * 2
    assert [record.to_json() for record in recorder.ended] == lines
    (suite,) = recorded(folder, kind="suite")
    assert suite["invocation"]
    assert {line["invocation"] for line in lines} == {suite["invocation"]}
    assert recorder.started == [line["name"] for line in lines]
    # The guide's CSV sink: a row per metric of each trial, the failed ones have none.
    with open(folder / "metrics.csv", newline="") as handle:
        rows = [tuple(row) for row in csv.reader(handle)]
    assert rows == [(line["name"], line["status"], metric, repr(value))
                    for line in lines for metric, value in line["metrics"].items()
                    if value is not None]


def test_a_sink_raising_in_trial_ended_leaves_the_others_complete_and_exits_3(run_with,
                                                                              capsys):
    code, folder = run_with("raising", recorder=SinkPlugin(recorder=Recorder),
                            raises=SinkPlugin(raises=lambda context: RaisesAtTheEnd()))
    assert code == exit_codes.RECORDING_INCOMPLETE
    err = capsys.readouterr().err
    assert ("RaisesAtTheEnd stopped recording after an error in trial_ended: RuntimeError: "
            "the third-party store refused the trial") in err
    names = {"euler-2nfe-seed0", "euler-3nfe-seed0"}
    assert {line["name"] for line in recorded(folder)} == names
    assert {record.name for record in Recorder.made[0].ended} == names
    assert {(r.info.run_name, r.info.status) for r in trial_runs(URI, "raising")} == {
        (name, "FINISHED") for name in names}


def test_a_factory_that_raises_is_reported_and_the_run_goes_on_without_it(run_with,
                                                                          capsys):
    code, folder = run_with("refused", refused=SinkPlugin(refused=refuses))
    assert code == exit_codes.RECORDING_INCOMPLETE
    err = capsys.readouterr().err
    assert ("sink 'refused' of SinkPlugin could not be made: ConnectionError: no route to "
            "the third-party store") in err
    names = {"euler-2nfe-seed0", "euler-3nfe-seed0"}
    assert {line["name"] for line in recorded(folder)} == names
    assert {(r.info.run_name, r.info.status) for r in trial_runs(URI, "refused")} == {
        (name, "FINISHED") for name in names}


def test_a_factory_returning_none_stays_out_of_the_run(tmp_path):
    loaded = plugin_manager.load_plugins(extra=[("quiet", SinkPlugin(
        absent=lambda context: None))])
    context = SinkContext(out_dir=tmp_path, suite=None, experiment="x", tracking_uri="",
                          client=None)
    sinks = make_sinks(loaded, context)
    # The local sink alone: MLflow's stays out without a client, as the test's does.
    assert [type(s).__name__ for s in sinks.active] == ["LocalSink"]
    assert sinks.dropped == []


def test_the_builtin_sinks_are_a_plugin_and_harness_plugins_lists_every_sink():
    loaded = plugin_manager.load_plugins(extra=[("third", SinkPlugin(recorder=Recorder))])
    info = describe(loaded)
    origins = {s["name"]: s["origin"]["module"] for s in info["sinks"]}
    assert origins == {"local": "harness_plugins.sinks", "mlflow": "harness_plugins.sinks",
                       "recorder": "SinkPlugin"}
    text = format_text(info)
    assert "Sinks (3):" in text
    assert "  recorder               the test's recorder sink" in text
    json.dumps(info)  # `harness plugins --json` prints it


def test_a_sink_registered_without_a_factory_fails_its_plugin_alone():
    plugin = SinkPlugin(broken="not callable")
    loaded = plugin_manager.load_plugins(extra=[("broken", plugin)])
    (failure,) = loaded.failures
    assert (failure.plugin, failure.stage) == ("broken", "register")
    assert "a sink needs a name and a callable factory" in failure.message
    assert loaded.sinks.names() == ["local", "mlflow"]
