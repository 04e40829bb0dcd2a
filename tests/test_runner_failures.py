"""Failing plugins fail their own trials only: the suite goes on, records why, exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import SuiteRunner, load_model, run_plan
from harness.core.distributed import resolve_device
from harness.bench.recording.sinks import FAILED, FINISHED, LocalSink, Sinks
from harness.bench.configuration.suite import build_suite
from tests.bench_support import bench_environment, harness, trial_runs, write_suite
from tests.plugins import bench_plugins

FAILING_SUITE = """
experiment = "failures"
model = "gmm-ring-2d"
steps = [4]
num_samples = 24
batch_size = 10
device = "cpu"

[samplers.euler]
[samplers.raising]
[samplers.nan_sampler]
[samplers.wrong_shape]
[samplers.heun]

[metrics.msn]
[metrics.suite_constant]
"""


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def test_failing_samplers_are_recorded_and_the_suite_goes_on(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "failing.toml", FAILING_SUITE)
    assert harness("run", suite, "--quiet") == 1
    captured = capsys.readouterr()
    assert "2 trials finished, 3 failed" in captured.out
    assert "FAILED raising-4nfe-seed0: RuntimeError: deliberate failure" in captured.out
    assert "NaN/Inf in 5 of 10 samples" in captured.out
    assert "sampler returned shape (10, 1), expected (10, 2)" in captured.out

    lines = [json.loads(line) for line in
             (tmp_path / "runs/failures/trials.jsonl").read_text().splitlines()]
    trials = {r["name"]: r for r in lines if r["kind"] == "trial"}
    assert {n: r["status"] for n, r in trials.items()} == {
        "euler-4nfe-seed0": FINISHED, "heun-7nfe-seed0": FINISHED,
        "raising-4nfe-seed0": FAILED, "nan_sampler-4nfe-seed0": FAILED,
        "wrong_shape-4nfe-seed0": FAILED}
    assert "deliberate failure" in trials["raising-4nfe-seed0"]["traceback"]
    euler = trials["euler-4nfe-seed0"]["metrics"]
    assert euler["nfe"] == 4.0 and euler["nfe_expected"] == 4.0
    assert 0.5 < euler["msn"] < 2.0       # ring of radius 1; 4 Euler steps are coarse
    assert trials["heun-7nfe-seed0"]["metrics"]["nfe"] == 7.0
    values = [r for r in lines if r["kind"] == "suite_values"]
    assert values[0]["values"] == {"suite_constant": 2.5}
    assert bench_plugins.SuiteConstant.calls == 1        # once per suite, not per trial

    runs = {r.info.run_name: r for r in trial_runs("sqlite:///mlflow.db", "failures")}
    assert {n: r.info.status for n, r in runs.items()} == {
        n: r["status"] for n, r in trials.items()}
    assert "RuntimeError" in runs["raising-4nfe-seed0"].data.tags["error"]
    board = (tmp_path / "runs/failures/leaderboard.md").read_text()
    assert "Failed trials (3)" in board and "| euler | 4 | 1 |" in board


def test_a_failing_metric_fails_its_trial_only(bench, tmp_path):
    raw = {"model": "gmm-ring-2d", "samplers": {"euler": {}}, "steps": [2, 3],
           "num_samples": 8, "device": "cpu", "metrics": {"msn": {}, "failing_metric": {}}}
    suite = build_suite(raw, bench)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, bench, load_model(suite, bench, device), device)
    local = LocalSink(tmp_path / "local")
    results = run_plan(plan, Sinks([local]), quiet=True)
    assert [r.status for r in results] == [FAILED, FAILED]
    assert all("deliberate failure inside the metric" in r.error for r in results)
    # What was measured before the metric failed is kept.
    assert results[0].metrics["nfe"] == 2.0 and "msn" in results[0].metrics
    lines = [json.loads(line) for line in Path(local.path).read_text().splitlines()]
    assert [r["status"] for r in lines if r["kind"] == "trial"] == [FAILED, FAILED]
    assert lines[-1] == {**lines[-1], "kind": "suite_end", "status": FAILED}


def test_batches_do_not_change_samples(bench, tmp_path):
    """Per-sample seeds: a trial's samples are the same for any batch size."""
    raw = {"model": "gmm-ring-2d", "samplers": {"euler_maruyama": {}}, "steps": [5],
           "num_samples": 12, "device": "cpu"}
    grabbed = []
    for batch_size in (12, 5):
        suite = build_suite(dict(raw, batch_size=batch_size), bench)
        device = resolve_device("cpu")
        plan = resolve_plan(suite, bench, load_model(suite, bench, device), device)
        runner = SuiteRunner(plan, Sinks([]), quiet=True)
        trial = plan.trials[0]
        samples = runner._sample(trial, lambda idx: _draw(runner, trial, idx),
                                 plan.batches())
        grabbed.append(samples)
    assert torch.equal(grabbed[0], grabbed[1])


def _draw(runner, trial, indices):
    from harness.core.sampling import generate
    from harness.core.schedules import make_grid

    sampler = runner.plugins.samplers.get(trial.sampler)
    grid = make_grid(runner.model.sde, trial.schedule, trial.steps)
    return generate(runner.model, sampler, grid, trial.seed, indices,
                    sampler.make_params(trial.params), dtype=runner.dtype)
