"""A tracking store that is not there fails fast before any compute; one that goes away
mid-suite loses nothing: the local JSONL holds every finished trial."""

from __future__ import annotations

import json
import time

import pytest

from tests.bench_support import (
    bench_environment,
    free_port,
    harness,
    shared_server,
    tripwire_suite,
    write_suite,
)
from tests.plugins.bench_plugins import TRIPWIRE

SUITE = tripwire_suite("flaky")


@pytest.fixture
def bench(monkeypatch, tmp_path):
    # A server that is gone stays gone here: a second of retries, not the default minute.
    monkeypatch.setenv("HARNESS_TRACKING_RETRY_S", "1")
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def test_unreachable_server_is_refused_before_any_compute(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "flaky.toml", SUITE)
    TRIPWIRE.arm(at=10**6, action=lambda: None)          # counts sampler calls
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert harness("run", suite, "--quiet", "--tracking-uri", uri) == 2
    assert time.monotonic() - start < 30                  # no retry storm
    err = capsys.readouterr().err
    assert f"the MLflow tracking store '{uri}' is not reachable" in err
    assert "nothing was computed" in err
    assert TRIPWIRE.calls == 0
    assert not (tmp_path / "runs").exists()


def test_unusable_sqlite_store_is_refused(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "flaky.toml", SUITE)
    (tmp_path / "a-file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/a-file/mlflow.db"
    assert harness("run", suite, "--quiet", "--tracking-uri", uri) == 2
    assert f"the MLflow tracking store '{uri}' cannot be written: its folder " \
        f"'{tmp_path}/a-file' is a file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_server_going_away_mid_suite_keeps_every_trial_locally(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "flaky.toml", SUITE)
    server = shared_server()
    TRIPWIRE.arm(at=3, action=server.stop)   # the server dies in trial 2 (call 1: warm-up)
    # Every trial finished, but MLflow does not have them all: exit status 3.
    assert harness("run", suite, "--quiet", "--tracking-uri", server.uri) == 3
    assert not server.alive
    captured = capsys.readouterr()
    # Which sink stopped, and which trials it lacks: the server died in trial 2, so at
    # least the last trial was never sent (and the first was).
    warning = next(line for line in captured.err.splitlines() if "stopped mid-suite" in line)
    assert warning.startswith(f"warning: MLflow ({server.uri}, experiment 'flaky')")
    missing = warning.split("not recorded there: ")[1].split(";")[0].split(", ")
    assert "tripwire_euler-3nfe-seed1" in missing
    assert "tripwire_euler-2nfe-seed0" not in missing
    assert "4 trials finished, 0 failed" in captured.out
    lines = [json.loads(line) for line in
             (tmp_path / "runs/flaky/trials.jsonl").read_text().splitlines()]
    trials = [r for r in lines if r["kind"] == "trial"]
    assert [r["status"] for r in trials] == ["FINISHED"] * 4
    assert {r["name"] for r in trials} == {f"tripwire_euler-{n}nfe-seed{s}"
                                           for n in (2, 3) for s in (0, 1)}
    assert all(r["metrics"]["nfe"] == r["nfe_expected"] for r in trials)
    # The local leaderboard was still written, from the JSONL.
    assert "| tripwire_euler | 3 | 2 |" in (tmp_path / "runs/flaky/leaderboard.md"
                                            ).read_text()
