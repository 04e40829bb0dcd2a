"""One record of a trial, `harness.bench.recording.record.TrialRecord`, and its two homes.

A runner's result becomes a record, a `trials.jsonl` line and the same record again;
every trial line committed under `results/` parses and writes back unchanged (but for
the keys later versions added); and the record that the real `MLflowSink` logs into an
embedded SQLite store comes back through `report.records_from_runs` with every field
MLflow holds, while the run's params are the flat keys and texts written out here by
hand, which the dashboard and existing stores rely on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.bench.configuration.canonical import flatten
from harness.bench.recording.record import TrialRecord, TrialResult
from harness.bench.reporting.report import finished_trial_runs, records_from_runs
from harness.bench.recording.sinks import FAILED, FINISHED, Sinks, SuiteInfo
from harness.bench.configuration.suite import build_suite, model_identity, resolve_trials
from harness.bench.recording.tracking import (
    MLflowSink,
    connect,
    run_replicates,
    search_experiment_runs,
)
from tests.bench_support import bench_environment

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(ROOT.glob("results/**/*trials.jsonl"))
#: Keys a line of today has that older committed lines lack, with the value they read as.
ADDED = {"guidance": lambda line: None, "replicate_higher_is_better": lambda line: {},
         "schedule": lambda line: (line["config"] or {}).get("schedule") or ""}
#: A guided suite: a plain sampler, and one whose grid varies S_churn and whose S_tmax
#: default is infinite (JSON has no infinity).
SUITE = {"model": "gmm-cond-2d",
         "samplers": {"euler": {}, "langevin": {"params": {"S_churn": [0.0, 10.0]}}},
         "steps": [3], "seeds": [0], "num_samples": 16, "batch_size": 16,
         "guidance": [2.0], "metrics": {"ode_error": {"num_samples": 8}}}
ENVIRONMENT = {"device": "cpu", "dtype": "float32", "version.harness": "0.1.0"}


@pytest.fixture(scope="module")
def planned(plugins):
    suite = build_suite(SUITE, plugins)
    model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
    identity = model_identity(suite, model)
    trials = resolve_trials(suite, plugins, identity, True, model.sde)
    assert [t.name for t in trials] == ["euler-w=2-3nfe-seed0",
                                        "langevin-S_churn=0-w=2-5nfe-seed0",
                                        "langevin-S_churn=10-w=2-5nfe-seed0"]
    return suite, identity, trials


def results(trials, folder: Path) -> list[TrialResult]:
    """A finished trial with everything a result can hold, a failed one, a plain one."""
    grid = folder / "samples.png"
    grid.write_bytes(b"png")
    euler, failing, plain = trials
    return [
        TrialResult(euler, FINISHED, metrics={"fid": 1.5, "nfe": 3.0, "lost": math.nan},
                    params={"fid_extractor": "oracle",
                            "discrete_kl_status": "not invertible"},
                    warnings=["counted NFE 4, declared 3", "no grid"],
                    replicates={"fid": [1.25, 1.75, math.inf]}, minimums={"fid": 0.0},
                    higher_is_better={"fid": False}, artifacts={"samples.png": grid},
                    started=100.0, ended=101.5),
        TrialResult(failing, FAILED, error="RuntimeError: boom",
                    traceback="Traceback (most recent call last):\n  ...", started=102.0,
                    ended=102.5),
        TrialResult(plain, FINISHED, metrics={"nfe": 5.0}, started=103.0, ended=104.0),
    ]


# --- trials.jsonl -------------------------------------------------------------------

def test_a_result_becomes_a_line_and_the_same_record_again(planned, tmp_path):
    _, _, trials = planned
    result = results(trials, tmp_path)[0]
    record = TrialRecord.from_result(result, invocation="20260101T000000")
    line = json.loads(json.dumps(record.to_json(), allow_nan=False))
    assert TrialRecord.from_json(line) == record
    # What the line says, written out from the result above.
    assert line["kind"] == "trial" and line["floor"] is False
    assert (line["name"], line["status"], line["sampler"]) == (
        "euler-w=2-3nfe-seed0", "FINISHED", "euler")
    assert (line["variant"], line["guidance"], line["schedule"]) == ("w=2", 2.0, "karras")
    assert (line["steps"], line["nfe_expected"], line["seed"], line["num_samples"]) == (
        3, 3, 0, 16)
    assert line["metrics"] == {"fid": 1.5, "nfe": 3.0, "lost": None}
    assert line["replicates"] == {"fid": [1.25, 1.75, None]}
    assert line["artifacts"] == {"samples.png": str(tmp_path / "samples.png")}
    assert line["config"]["guidance"] == {"scale": 2.0, "labels": "balanced"}
    assert line["invocation"] == "20260101T000000"


def test_a_line_keeps_the_committed_key_order_with_the_schedule_after_the_params(
        planned, tmp_path):
    """New lines differ from the committed ones only by the `schedule` key."""
    _, _, trials = planned
    committed = next(json.loads(line) for line in
                     (ROOT / "results/guided/trials.jsonl").read_text().splitlines()
                     if json.loads(line)["kind"] == "trial")
    expected = list(committed)
    expected.insert(expected.index("params") + 1, "schedule")
    record = TrialRecord.from_result(results(trials, tmp_path)[0])
    assert list(record.to_json()) == expected


def test_an_infinite_hyperparameter_is_the_string_json_holds(planned, tmp_path):
    _, _, trials = planned
    line = TrialRecord.from_result(results(trials, tmp_path)[1]).to_json()
    assert line["params"]["S_tmax"] == "inf" and line["config"]["params"]["S_tmax"] == "inf"
    assert TrialRecord.from_json(json.loads(json.dumps(line))).to_json() == line


@pytest.mark.parametrize("path", COMMITTED,
                         ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_every_committed_trial_line_parses_and_writes_back_unchanged(path):
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    trials = [line for line in lines if line["kind"] == "trial"]
    assert trials
    for line in trials:
        again = TrialRecord.from_json(line).to_json()
        assert {k: again[k] for k in line} == line, line["name"]
        added = set(again) - set(line)
        assert added <= set(ADDED), added
        assert {k: again[k] for k in added} == {k: ADDED[k](line) for k in added}


# --- MLflow -------------------------------------------------------------------------

@pytest.fixture
def store(monkeypatch, tmp_path):
    """An embedded SQLite store in tmp_path (copied from an initialised empty one)."""
    yield from bench_environment(monkeypatch, tmp_path)


def logged_through_the_sink(planned, uri: str, folder: Path):
    """The three results, recorded by the real MLflowSink through `Sinks`."""
    suite, identity, trials = planned
    sink = MLflowSink(connect(uri), uri, "records")
    sinks = Sinks([sink])
    sinks.suite_started(SuiteInfo(
        suite=suite, trials=trials, skipped=[], model_identity=identity,
        environment=ENVIRONMENT, sampler_origins={"euler": {"plugin": "euler"}}))
    ended = results(trials, folder)
    for result in ended:
        sinks.trial_started(result.trial)
        sinks.trial_ended(result)
    sinks.suite_ended(ended, FAILED, 1.0)
    assert not sinks.dropped
    return sink, ended


#: What MLflow holds of a record, compared field by field; the rest comes back empty.
HELD = ("floor", "name", "config_hash", "status", "sampler", "variant", "guidance",
        "params", "schedule", "steps", "nfe_expected", "seed", "num_samples", "error",
        "warnings", "replicates", "replicate_minimums", "replicate_higher_is_better")
NOT_HELD = {"traceback": None, "config": None, "artifacts": {}, "invocation": ""}


def test_a_record_logged_by_the_mlflow_sink_comes_back_from_the_runs(planned, store,
                                                                     tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink, ended = logged_through_the_sink(planned, uri, tmp_path)
    runs = search_experiment_runs(uri, "records")
    back = records_from_runs(runs, run_replicates(uri, finished_trial_runs(runs))).records
    assert len(back) == len(ended)
    by_name = {r["name"]: r for r in back}
    for result in ended:
        sent = TrialRecord.from_result(result).to_json()
        got = by_name[sent["name"]]
        assert {k: got[k] for k in HELD} == {k: sent[k] for k in HELD}, sent["name"]
        assert got["metrics"] == {k: v for k, v in sent["metrics"].items() if v is not None}
        assert got["measured_params"] == {k: v for k, v in sent["measured_params"].items()
                                          if k.endswith("_status")}
        assert {k: got[k] for k in NOT_HELD} == NOT_HELD
        assert 0 < got["started"] <= got["ended"]
    # A run entity parses as its row does.
    client = sink.client
    for run_id in finished_trial_runs(runs):
        run = client.get_run(run_id)
        logged = run_replicates(uri, [run_id]).get(run_id)
        parsed = TrialRecord.from_mlflow_run(run, logged).to_json()
        assert parsed == by_name[run.info.run_name]


def test_the_trial_run_holds_the_params_and_tags_the_dashboard_reads(planned, store,
                                                                     tmp_path):
    """The flat keys and texts, written out by hand (as `str` of each value)."""
    _, identity, trials = planned
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink, ended = logged_through_the_sink(planned, uri, tmp_path)
    euler = trials[0]
    run = sink.client.get_run(sink.trial_runs[euler.config_hash])
    expected = {"sampler": "euler", "steps": "3", "nfe_expected": "3",
                "schedule": "karras", "seed": "0", "num_samples": "16",
                "batch_size": "16", "dtype": "float32", "config_hash": euler.config_hash,
                "guidance": "2.0", "sampler_origin.plugin": "euler",
                "metric.ode_error.num_samples": "8",
                "fid_extractor": "oracle", "discrete_kl_status": "not invertible",
                **{f"model.{k}": str(v) for k, v in flatten(identity).items()},
                **ENVIRONMENT}
    assert run.data.params == expected
    assert run.data.metrics == {"fid": 1.5, "nfe": 3.0}
    tags = run.data.tags
    assert {k: tags.get(k) for k in ("harness.kind", "harness.suite", "config_hash",
                                      "harness.variant", "warnings", "error")} == {
        "harness.kind": "trial", "harness.suite": "suite", "config_hash": euler.config_hash,
        "harness.variant": "w=2", "warnings": "counted NFE 4, declared 3; no grid",
        "error": None}
    assert "harness.floor" not in tags
    langevin = sink.client.get_run(sink.trial_runs[trials[2].config_hash])
    assert langevin.data.params["sampler.S_tmax"] == "inf"
    assert langevin.data.params["sampler.S_churn"] == "10.0"
    assert langevin.data.tags["harness.variant"] == "S_churn=10,w=2"
    failed = sink.client.get_run(sink.trial_runs[trials[1].config_hash])
    assert (failed.info.status, failed.data.tags["error"]) == ("FAILED",
                                                                "RuntimeError: boom")
