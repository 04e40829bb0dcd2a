"""End to end into real MLflow: the embedded SQLite store, and a server started here.

A tiny suite (2 samplers x 2 step budgets on the ring oracle) must log one parent run and
four nested trial runs with their params, metrics and artifacts, verified by asking
MLflow; `harness report` must read them back into a leaderboard.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.bench_support import (
    TINY_SUITE,
    bench_environment,
    client_for,
    harness,
    shared_server,
    suite_runs,
    trial_runs,
    write_suite,
)

EXPECTED = {"euler-3nfe-seed0": 3, "euler-6nfe-seed0": 6, "heun-5nfe-seed0": 5,
            "heun-11nfe-seed0": 11}


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def check_runs(uri: str) -> None:
    client = client_for(uri)
    parents = suite_runs(uri, "tiny")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["suite.model"] == "gmm-ring-2d"
    assert parent.data.params["version.torch"]
    # FID-vs-NFE style charts at the parent: one history per sampler, step = NFE.
    history = client.get_metric_history(parent.info.run_id, "msn/heun")
    assert sorted(m.step for m in history) == [5, 11]
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "trials.csv"} <= parent_files

    children = trial_runs(uri, "tiny")
    assert {r.info.run_name for r in children} == set(EXPECTED)
    for run in children:
        data = run.data
        assert run.info.status == "FINISHED"
        assert data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert data.tags["config_hash"] == data.params["config_hash"]
        assert data.params["sampler"] in ("euler", "heun")
        assert data.params["schedule"] == "karras" and data.params["seed"] == "0"
        assert data.params["model.name"] == "gmm-ring-2d"
        assert data.params["model.sde.sde"] == "vp" and "model.weights_sha256" in data.params
        assert data.params["sampler_origin.module"].startswith("harness_plugins.")
        assert data.params["num_samples"] == "32" and data.params["device"] == "cpu"
        assert data.metrics["nfe"] == EXPECTED[run.info.run_name]
        assert data.metrics["wall_clock_s"] > 0 and data.metrics["samples_per_s"] > 0
        assert 0.3 < data.metrics["msn"] < 3
        files = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert files == [f"{run.info.run_name}.png"]


def check_report(tmp_path, uri: str, capsys) -> None:
    assert harness("report", "--experiment", "tiny", "--tracking-uri", uri,
                   "--out", tmp_path / "report") == 0
    assert "| heun | 6 | 1 | 11 |" in capsys.readouterr().out
    board = pd.read_csv(tmp_path / "report/tiny/leaderboard.csv")
    assert sorted(board["nfe_mean"]) == [3, 5, 6, 11]
    assert (tmp_path / "report/tiny/leaderboard.md").is_file()


def test_embedded_sqlite_store(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    assert harness("run", suite, "--quiet") == 0
    out = capsys.readouterr().out
    assert "dashboard: harness dashboard --tracking-uri sqlite:///mlflow.db" in out
    assert (tmp_path / "mlflow.db").is_file()
    assert (tmp_path / "runs/tiny/samples/heun-11nfe-seed0.png").is_file()
    check_runs("sqlite:///mlflow.db")
    check_report(tmp_path, "sqlite:///mlflow.db", capsys)
    # One suite wall-clock, measured by the runner, whichever sink records it.
    end = [json.loads(line) for line in (tmp_path / "runs/tiny/trials.jsonl")
           .read_text().splitlines() if '"suite_end"' in line][-1]
    parent = suite_runs("sqlite:///mlflow.db", "tiny")[0]
    assert parent.data.metrics["suite_wall_s"] == pytest.approx(end["wall_s"], rel=1e-12)


def test_real_tracking_server(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    server = shared_server()
    assert harness("run", suite, "--quiet", "--tracking-uri", server.uri) == 0
    check_runs(server.uri)
    check_report(tmp_path, server.uri, capsys)
    # Artifacts went through the server into its own artifacts folder.
    assert list((server.root / "server-artifacts").rglob("heun-11nfe-seed0.png"))
    assert not (tmp_path / "mlflow.db").exists()
