"""Fault injection, the process: a plugin's sys.exit, samples in the wrong dtype, kill -9,
and two quick Ctrl-C. The real `harness` command runs in a subprocess against a real
SQLite store; every test asserts the exit status, the runs' states, and that every
finished trial is recorded exactly once.
"""

from __future__ import annotations

import collections
import shutil
import signal
import time

import pytest

from harness.bench import exit_codes
from harness.bench.recording.stale_runs import CLOSED_TAG, PID_TAG
from tests.bench_support import _template_store, suite_runs, trial_runs
from tests.fault_support import (
    FAULT_SUITE,
    cli_env,
    fault_plugins,
    finish,
    records,
    run_cli,
    start_cli,
    wait_for,
)

URI = "sqlite:///mlflow.db"  # relative: resolved in the working directory
NAMES = [f"slow_euler-{n}nfe-seed0" for n in (2, 3, 4)]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The command's working directory, with an initialised SQLite store (./mlflow.db, the
    default); the test process works there too, so that URI names the same file."""
    fault_plugins(tmp_path / "site")
    (tmp_path / "run").mkdir()
    shutil.copyfile(_template_store(), tmp_path / "run" / "mlflow.db")
    monkeypatch.chdir(tmp_path / "run")
    return tmp_path / "run"


def _suite(workdir, sampler, experiment="faults"):
    path = workdir / f"{experiment}.toml"
    path.write_text(FAULT_SUITE.format(experiment=experiment, sampler=sampler))
    return str(path)


def _env(workdir, **extra):
    return cli_env(workdir.parent / "site", **extra)


def _statuses(experiment="faults"):
    return collections.Counter((r.info.run_name, r.info.status)
                               for r in trial_runs(URI, experiment))


def second_trial_running(experiment="faults"):
    """A condition: the first trial is FINISHED in the store and the second is RUNNING."""
    def condition():
        try:
            states = sorted(r.info.status for r in trial_runs(URI, experiment))
        except Exception:  # no store or experiment yet
            return False
        return states == ["FINISHED", "RUNNING"]
    return condition


def test_a_plugin_calling_sys_exit_fails_its_trial_and_the_suite_goes_on(workdir):
    suite = workdir / "exit.toml"
    suite.write_text(FAULT_SUITE.format(experiment="exit", sampler="exits")
                     + "[samplers.euler]\n")
    code, out, err = run_cli(["run", str(suite), "--quiet"], workdir, _env(workdir))
    assert code == exit_codes.TRIALS_FAILED, err
    assert "3 trials finished, 3 failed" in out
    assert "FAILED exits-2nfe-seed0: SystemExit: 0" in out
    trials = [r for r in records(workdir / "runs/exit/trials.jsonl") if r["kind"] == "trial"]
    assert collections.Counter((r["sampler"], r["status"]) for r in trials) == {
        ("exits", "FAILED"): 3, ("euler", "FINISHED"): 3}
    runs = trial_runs(URI, "exit")
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 3 + ["FINISHED"] * 3
    assert [r.info.status for r in suite_runs(URI, "exit")] == ["FAILED"]


def test_samples_in_another_dtype_fail_their_trial(workdir):
    suite = _suite(workdir, "float64_euler", "dtype")
    code, out, err = run_cli(["run", suite, "--quiet", "--steps", "2"], workdir, _env(workdir))
    assert code == exit_codes.TRIALS_FAILED, err
    assert ("FAILED float64_euler-2nfe-seed0: TrialFailure: sampler returned torch.float64 "
            "samples in a float32 run; keep the state in x's dtype") in out


def test_kill_9_leaves_runs_that_the_next_start_closes_as_killed(workdir):
    suite = _suite(workdir, "slow_euler")
    process = start_cli(["run", suite, "--quiet"], workdir,
                        _env(workdir, HARNESS_TEST_SLEEP="3"))
    wait_for(second_trial_running(), process, "the second trial")
    process.kill()  # SIGKILL: no handler, no clean-up
    process.communicate()
    killed_pid = str(process.pid)
    running = [r for r in trial_runs(URI, "faults") + suite_runs(URI, "faults")
               if r.info.status == "RUNNING"]
    assert len(running) == 2  # the parent and the trial in flight
    assert {r.data.tags[PID_TAG] for r in running} == {killed_pid}

    code, out, err = run_cli(["run", suite, "--quiet", "--resume"], workdir, _env(workdir))
    assert code == exit_codes.SUCCESS, err
    assert f"left RUNNING by process(es) {killed_pid}, which no longer exist" in err
    assert "2 trials finished, 0 failed, 1 skipped" in out
    every = trial_runs(URI, "faults") + suite_runs(URI, "faults")
    assert not [r for r in every if r.info.status == "RUNNING"]
    closed = [r for r in every if CLOSED_TAG in r.data.tags]
    assert sorted(r.info.status for r in closed) == ["KILLED", "KILLED"]
    finished = [n for (n, s), k in _statuses().items() for _ in range(k) if s == "FINISHED"]
    assert sorted(finished) == sorted(NAMES)  # each exactly once


def test_two_quick_ctrl_c_leave_no_running_run(workdir):
    suite = _suite(workdir, "slow_euler")
    process = start_cli(["run", suite, "--quiet"], workdir,
                        _env(workdir, HARNESS_TEST_SLEEP="3"))
    wait_for(second_trial_running(), process, "the second trial")
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == exit_codes.INTERRUPTED, err
    every = trial_runs(URI, "faults") + suite_runs(URI, "faults")
    assert sorted(r.info.status for r in every) == ["FINISHED", "KILLED", "KILLED"]


def test_sigterm_exits_143_and_leaves_no_running_run(workdir):
    suite = _suite(workdir, "slow_euler")
    process = start_cli(["run", suite, "--quiet"], workdir,
                        _env(workdir, HARNESS_TEST_SLEEP="3"))
    wait_for(second_trial_running(), process, "the second trial")
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == exit_codes.TERMINATED == 143, err
    every = trial_runs(URI, "faults") + suite_runs(URI, "faults")
    assert sorted(r.info.status for r in every) == ["FINISHED", "KILLED", "KILLED"]
