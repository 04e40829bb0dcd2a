"""A log (stderr not a terminal) gets one line per trial and per suite metric."""

from __future__ import annotations

import re

import pytest

from harness.bench.runner import progress_line
from harness.bench.sinks import FAILED, FINISHED, TrialResult
from tests.bench_support import bench_environment, harness, write_suite

SUITE = """
experiment = "progress"
model = "gmm-ring-2d"
steps = [3, 5]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.euler]
[samplers.heun]

[metrics.msn]
[metrics.suite_constant]
"""

TRIAL_LINE = re.compile(r"^\[trial (\d)/4\] (\w+-\d+nfe-seed0): NFE (\d+), [\d.]+ s; "
                        r"(\d) left, ETA \d+ s$")


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def test_one_line_per_trial_and_per_suite_metric_in_a_log(bench, tmp_path, capsys):
    assert harness("run", write_suite(tmp_path / "progress.toml", SUITE)) == 0
    err = capsys.readouterr().err.splitlines()   # captured: not a terminal
    trials = [m.groups() for m in map(TRIAL_LINE.match, err) if m]
    assert [(done, left) for done, _, _, left in trials] == [
        ("1", "3"), ("2", "2"), ("3", "1"), ("4", "0")]
    assert {(name, nfe) for _, name, nfe, _ in trials} == {
        ("euler-3nfe-seed0", "3"), ("euler-5nfe-seed0", "5"),
        ("heun-5nfe-seed0", "5"), ("heun-9nfe-seed0", "9")}
    assert any(line.startswith("[suite metric 1/1] computing suite_constant") for line in err)
    assert any(re.match(r"\[suite metric 1/1\] suite_constant done in [\d.]+ s$", line)
               for line in err)


def test_quiet_prints_no_progress(bench, tmp_path, capsys):
    assert harness("run", write_suite(tmp_path / "progress.toml", SUITE), "--quiet") == 0
    assert "[trial" not in capsys.readouterr().err


def test_line_shows_a_failure_and_an_eta_from_the_mean_trial_time():
    result = TrialResult(trial=_Named("x-3nfe-seed1"), status=FAILED, started=10.0,
                         ended=12.5)
    assert progress_line(result, done=2, total=50, elapsed=300.0) == (
        "[trial 2/50] x-3nfe-seed1 FAILED: NFE -, 2.5 s; 48 left, ETA 2 h 00 min")
    result = TrialResult(trial=_Named("y"), status=FINISHED, metrics={"nfe": 34.0},
                         started=0.0, ended=1.0)
    assert progress_line(result, done=3, total=5, elapsed=100.0).endswith(
        "NFE 34, 1.0 s; 2 left, ETA 1 min 07 s")


class _Named:
    def __init__(self, name: str):
        self.name = name
