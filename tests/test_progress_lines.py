"""A log (stderr not a terminal) gets one line per trial and per suite metric."""

from __future__ import annotations

import re

import pytest

from harness.bench.running.progress import EtaEstimate, progress_line
from harness.bench.recording.sinks import FAILED, FINISHED, TrialResult
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

TRIAL_LINE = re.compile(r"^\[trial (\d)/4\] (\w+-\d+nfe-seed0): NFE (\d+), [\d.]+ s "
                        r"\(sampling [\d.]+ s[^)]*\); (\d) left, ETA \d+ s$")


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


def _result(name, seconds, status=FINISHED, kind="trial", **metrics):
    return TrialResult(trial=_Named(name, kind), status=status, metrics=metrics,
                       started=100.0, ended=100.0 + seconds)


def test_line_names_the_metrics_that_took_a_large_share_of_the_trial():
    result = _result("euler-10nfe-seed0", 42.0, nfe=10.0, wall_clock_s=1.1,
                     ode_error_s=38.9, fid_s=1.2, kid_s=0.5, network_s=0.9)
    assert progress_line(result, 5, 52, 400.0, ["fid", "kid", "ode_error"]) == (
        "[trial 5/52] euler-10nfe-seed0: NFE 10, 42.0 s (sampling 1.1 s; ode_error "
        "38.9 s); 47 left, ETA 6 min 40 s")
    failed = _result("x-3nfe-seed1", 2.5, status=FAILED)
    assert progress_line(failed, 2, 50, 7200.0) == (
        "[trial 2/50] x-3nfe-seed1 FAILED: NFE -, 2.5 s; 48 left, ETA 2 h 00 min")


def test_eta_predicts_each_kind_from_its_own_kind_and_ignores_one_time_costs():
    eta = EtaEstimate()
    floors = [_Named("data-seed0", "floor"), _Named("data-seed1", "floor")]
    trials = [_Named(f"euler-{n}nfe-seed0", nfe=n) for n in (10, 20, 40, 40)]
    eta.add(_result("data-seed0", 0.5, kind="floor"))
    # After a quick floor draw nothing predicts a sampler trial: no 2-minute guesses.
    assert eta.remaining(floors[1:] + trials) is None
    assert eta.remaining(floors[1:]) == pytest.approx(0.5)
    # The first trial pays 60 s of reference solves; the next two do not.
    eta.add(_result("euler-10nfe-seed0", 63.0, nfe=10.0, wall_clock_s=1.0))
    eta.add(_result("euler-20nfe-seed0", 4.0, nfe=20.0, wall_clock_s=2.0))
    eta.add(_result("euler-30nfe-seed0", 5.0, nfe=30.0, wall_clock_s=3.0))
    eta.add(_result("heun-9nfe-seed0", 1.0, status=FAILED))   # says nothing of the rest
    # 0.1 s per NFE (median) times 40 NFE, plus the median 2 s for the rest, per trial.
    assert eta.remaining(trials[2:]) == pytest.approx(2 * (0.1 * 40 + 2.0))
    assert eta.remaining(floors[1:] + trials[2:]) == pytest.approx(0.5 + 12.0)
    line = progress_line(_result("euler-30nfe-seed0", 5.0, nfe=30.0), 4, 4, None)
    assert line.endswith("0 left, ETA 0 s")


class _Named:
    def __init__(self, name: str, kind: str = "trial", nfe: int = 0):
        self.name, self.kind, self.nfe = name, kind, nfe
