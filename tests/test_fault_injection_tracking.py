"""Fault injection, the tracking store and resume: a tracking server killed mid-suite,
--resume after a plugin upgrade, an unwritable SQLite path, and two processes creating
the same fresh SQLite store. Real `mlflow server` processes on 127.0.0.1 (started here,
stopped by process group), real SQLite files, the real `harness` command.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.bench import exit_codes
from harness.bench.recording.stale_runs import CLOSED_TAG
from tests.bench_support import (
    TINY_SUITE,
    ServerHandle,
    bench_environment,
    harness,
    suite_runs,
    trial_runs,
    write_suite,
)
from tests.fault_support import (
    FAULT_SUITE,
    cli_env,
    fault_plugins,
    finish,
    install_distribution,
    records,
    run_cli,
    start_cli,
    wait_for,
)


def _finished_once(jsonl: Path, names: list[str]) -> None:
    finished = collections.Counter(r["name"] for r in records(jsonl)
                                   if r["kind"] == "trial" and r["status"] == "FINISHED")
    assert finished == collections.Counter(names)


def test_a_server_killed_mid_suite_exits_3_and_resume_reads_the_local_record(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="fault-server-", dir=tmp_path))
    server = ServerHandle(root)
    try:
        server.wait_healthy()
        fault_plugins(tmp_path / "site")
        suite = tmp_path / "dies.toml"
        suite.write_text(FAULT_SUITE.format(experiment="dies", sampler="slow_euler"))
        # The server is killed for good: a second of retries, not the default minute.
        env = cli_env(tmp_path / "site", HARNESS_TEST_SLEEP="2", HARNESS_TRACKING_RETRY_S="1")
        process = start_cli(["run", str(suite), "--quiet", "--tracking-uri", server.uri],
                            tmp_path, env)

        def second_trial_running():
            try:
                return sorted(r.info.status for r in trial_runs(server.uri, "dies")) == [
                    "FINISHED", "RUNNING"]
            except Exception:
                return False

        wait_for(second_trial_running, process, "the second trial")
        server.stop()
        code, out, err = finish(process)
        assert code == exit_codes.RECORDING_INCOMPLETE, err
        assert "3 trials finished, 0 failed" in out
        assert f"MLflow ({server.uri}, experiment 'dies') stopped mid-suite" in err
        jsonl = tmp_path / "runs/dies/trials.jsonl"
        names = [f"slow_euler-{n}nfe-seed0" for n in (2, 3, 4)]
        _finished_once(jsonl, names)

        # The server comes back on the same store: --resume redoes nothing that the
        # local record has, and closes what the first process left RUNNING.
        server = ServerHandle(root)
        server.wait_healthy()
        code, out, err = run_cli(["run", str(suite), "--quiet", "--resume",
                                  "--tracking-uri", server.uri], tmp_path, env)
        assert code == exit_codes.SUCCESS, err
        assert "0 trials finished, 0 failed, 3 skipped" in out
        _finished_once(jsonl, names)
        every = trial_runs(server.uri, "dies") + suite_runs(server.uri, "dies")
        assert not [r for r in every if r.info.status == "RUNNING"]
        assert sorted(r.info.status for r in every if CLOSED_TAG in r.data.tags) == [
            "KILLED", "KILLED"]   # the trial in flight and its suite
    finally:
        server.stop()


TOY = '''"""A plugin whose output changes between releases (version {version})."""
from harness import Capabilities, Sampler, hookimpl
from harness_plugins.euler import euler

harness_api_version = 1


def toy(model, x, grid, noise, callback, params):
    """Euler, then moved by {shift} (release {version})."""
    return euler(model, x, grid, noise, callback, params) + {shift}


@hookimpl
def harness_register_samplers(register):
    register(Sampler(name="toy", fn=toy, capabilities=Capabilities(stochastic=False, order=1),
                     citation="a test plugin"))
'''


def test_resume_after_a_plugin_upgrade_reruns_what_the_new_code_changes(tmp_path):
    releases = {}
    for version, shift in (("1.0", 0.0), ("2.0", 1.0)):
        releases[version] = install_distribution(
            tmp_path / f"site-{version}", "toy-sampler", version,
            {"toy_sampler": TOY.format(version=version, shift=shift)},
            {"toy_sampler": "toy_sampler"})
    fault_plugins(tmp_path / "site-tests")   # the msn metric
    suite = tmp_path / "toy.toml"
    suite.write_text(FAULT_SUITE.format(experiment="toy", sampler="toy")
                     .replace("steps = [2, 3, 4]", "steps = [4]"))
    jsonl = tmp_path / "runs/toy/trials.jsonl"

    def run(version, *extra):
        env = cli_env(releases[version], tmp_path / "site-tests")
        code, out, err = run_cli(["run", str(suite), "--quiet", *extra], tmp_path, env)
        assert code == exit_codes.SUCCESS, err
        return out

    assert "1 trials finished, 0 failed" in run("1.0")
    assert "0 trials finished, 0 failed, 1 skipped" in run("1.0", "--resume")
    trials = [r for r in records(jsonl) if r["kind"] == "trial"]
    assert len(trials) == 1
    assert trials[0]["config"]["code"]["plugins"]["toy-sampler"] == "1.0"
    out = run("2.0", "--resume")
    assert "1 trials finished, 0 failed" in out and "skipped" not in out
    out = run("2.0", "--resume")
    assert "0 trials finished, 0 failed, 1 skipped" in out
    trials = [r for r in records(jsonl) if r["kind"] == "trial"]
    assert [t["config"]["code"]["plugins"]["toy-sampler"] for t in trials] == ["1.0", "2.0"]
    assert trials[0]["config_hash"] != trials[1]["config_hash"]
    # The new release's result is its own: msn = E|x|^2 grows when every sample moves by 1.
    old, new = (t["metrics"]["msn"] for t in trials)
    assert new > old + 1.0


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def test_an_unwritable_sqlite_path_fails_at_once(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    for uri, problem in (
            ("sqlite:////proc/mlflow.db", "its folder '/proc' is not writable ("),
            (f"sqlite:///{tmp_path}/missing/mlflow.db",
             f"its folder '{tmp_path}/missing' does not exist")):
        assert harness("run", suite, "--quiet", "--tracking-uri", uri) == exit_codes.USAGE
        err = capsys.readouterr().err
        assert f"error: the MLflow tracking store {uri!r} cannot be written: {problem}" in err
        assert "retried" not in err and "Traceback" not in err


CONNECT = """
import sys, time
from pathlib import Path
from harness.bench.recording.tracking import connect
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
connect(sys.argv[1]).search_experiments()
print("connected")
"""


@pytest.mark.parametrize("attempt", range(2))
def test_two_processes_create_a_fresh_sqlite_store_together(tmp_path, attempt):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", CONNECT, uri, str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    time.sleep(5)  # both imported and waiting (a head start cannot hurt the test)
    go.touch()
    results = [p.communicate(timeout=300) + (p.returncode,) for p in processes]
    for out, err, code in results:
        assert code == 0 and out.strip() == "connected", err
