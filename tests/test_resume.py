"""Interrupted suites leave KILLED runs, never FINISHED ones; --resume runs the rest once.

The tripwire sampler interrupts the suite from inside a trial: first with Ctrl-C
(KeyboardInterrupt), then with a real SIGTERM sent to this process, which the runner's
handler turns into an exception so that the trial's run can be ended as KILLED.
"""

from __future__ import annotations

import collections
import json
import os
import signal

import pytest

from tests.bench_support import (
    bench_environment,
    harness,
    suite_runs,
    trial_runs,
    tripwire_suite,
    write_suite,
)
from tests.plugins.bench_plugins import TRIPWIRE

SUITE = tripwire_suite("resume")
URI = "sqlite:///mlflow.db"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def statuses(experiment: str = "resume") -> collections.Counter:
    return collections.Counter((r.info.run_name, r.info.status)
                               for r in trial_runs(URI, experiment))


def ctrl_c() -> None:
    raise KeyboardInterrupt


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_interrupt_then_resume(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "resume.toml", SUITE)
    names = {f"tripwire_euler-{n}nfe-seed{s}" for n in (2, 3) for s in (0, 1)}

    # 1. Ctrl-C inside the 2nd trial: one FINISHED run, one KILLED, the parent KILLED.
    # (Call 1 of the sampler is its untimed warm-up run before its first trial.)
    TRIPWIRE.arm(at=3, action=ctrl_c)
    assert harness("run", suite, "--quiet") == 130
    first = statuses()
    assert sorted(first.values()) == [1, 1]
    assert ("tripwire_euler-2nfe-seed0", "FINISHED") in first
    assert ("tripwire_euler-2nfe-seed1", "KILLED") in first
    assert [r.info.status for r in suite_runs(URI, "resume")] == ["KILLED"]

    # 2. --resume, killed by SIGTERM in its 2nd trial: again KILLED, not FINISHED; the
    # exit status says which signal (128 + 15).
    TRIPWIRE.arm(at=3, action=sigterm)
    assert harness("run", suite, "--quiet", "--resume") == 143
    second = statuses()
    assert second[("tripwire_euler-2nfe-seed1", "FINISHED")] == 1
    assert second[("tripwire_euler-3nfe-seed0", "KILLED")] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored

    # 3. --resume to the end: only the two missing trials run.
    TRIPWIRE.disarm()
    capsys.readouterr()
    assert harness("run", suite, "--quiet", "--resume") == 0
    out = capsys.readouterr().out
    assert "2 trials finished, 0 failed, 2 skipped" in out
    assert TRIPWIRE.calls == 3                               # the warm-up and 2 trials
    final = statuses()
    finished = collections.Counter(n for (n, status), k in final.items()
                                   for _ in range(k) if status == "FINISHED")
    assert finished == collections.Counter(names)            # each exactly once
    hashes = [r.data.tags["config_hash"] for r in trial_runs(URI, "resume")
              if r.info.status == "FINISHED"]
    assert len(hashes) == len(set(hashes)) == 4
    parents = sorted(r.info.status for r in suite_runs(URI, "resume"))
    assert parents == ["FINISHED", "KILLED", "KILLED"]
    # The last parent's table covers the whole suite, resumed trials included.
    board = (tmp_path / "runs/resume/leaderboard.md").read_text()
    assert "| tripwire_euler | 2 | 2 |" in board and "| tripwire_euler | 3 | 2 |" in board

    # 4. The local copy saw every step, and marked the interruptions.
    lines = [json.loads(line) for line in
             (tmp_path / "runs/resume/trials.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in lines if r["kind"] == "trial") == sorted(names)
    assert [r["reason"] for r in lines if r["kind"] == "interrupted"] == [
        "KeyboardInterrupt", "terminated by SIGTERM"]


def test_resume_with_nothing_left_runs_nothing(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "resume.toml", SUITE.replace("[2, 3]", "[2]"))
    assert harness("run", suite, "--quiet", "--experiment", "again") == 0
    TRIPWIRE.arm(at=10**6, action=ctrl_c)            # count calls only
    assert harness("run", suite, "--quiet", "--experiment", "again", "--resume") == 0
    assert TRIPWIRE.calls == 0
    assert "0 trials finished, 0 failed, 2 skipped" in capsys.readouterr().out


def test_a_second_ctrl_c_during_clean_up_leaves_no_running_run(bench, tmp_path, capsys,
                                                                monkeypatch):
    """Ctrl-C in a trial, then again while each run is being ended as KILLED: the runs
    are still ended, and the command still exits 130."""
    from harness.bench.recording.tracking import MLflowSink

    end = MLflowSink._end

    def end_under_a_second_ctrl_c(self, run_id, status):
        if status == "KILLED":
            os.kill(os.getpid(), signal.SIGINT)  # delivered before _end returns
        return end(self, run_id, status)

    monkeypatch.setattr(MLflowSink, "_end", end_under_a_second_ctrl_c)
    # What the process had before: Python's default handler, or SIG_IGN when it was
    # started in the background by a non-interactive shell (which ignores SIGINT there).
    before = signal.getsignal(signal.SIGINT)
    suite = write_suite(tmp_path / "resume.toml", SUITE)
    TRIPWIRE.arm(at=3, action=ctrl_c)                # the warm-up, trial 1, then trial 2
    assert harness("run", suite, "--quiet") == 130
    assert capsys.readouterr().err.count("interrupt received: ending the tracking runs") == 2
    assert sorted(r.info.status for r in trial_runs(URI, "resume")) == ["FINISHED", "KILLED"]
    assert [r.info.status for r in suite_runs(URI, "resume")] == ["KILLED"]
    assert signal.getsignal(signal.SIGINT) is before  # restored
