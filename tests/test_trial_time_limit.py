"""A trial that hangs is stopped at `trial_time_limit`, recorded FAILED with the reason,
and the suite goes on; the limit is validated like any field and changes no hash."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import types

import pytest
from harness_plugins.euler import euler

from harness import Capabilities, Sampler, hookimpl
from harness.bench import exit_codes
from harness.bench.running import time_limit as time_limit_module
from harness.bench.configuration.suite import build_suite, resolve_trials
from harness.bench.running.time_limit import TrialTimeout, time_limit
from harness.plugin import manager as plugin_manager
from tests.bench_support import bench_environment, harness, write_suite
from tests.plugins import bench_plugins

harness_api_version = 1  # this module is also the plugin of its hanging samplers


def hangs(model, x, grid, noise, callback, params):
    """Never returns, as a sampler stuck in a loop would."""
    while True:
        time.sleep(3600)


def swallows_exceptions(model, x, grid, noise, callback, params):
    """Catches every Exception around a long wait once, as a careless fallback would,
    then waits again."""
    with contextlib.suppress(Exception):
        time.sleep(3600)
    time.sleep(3600)
    return euler(model, x, grid, noise, callback, params)


@hookimpl
def harness_register_samplers(register):
    for fn in (hangs, swallows_exceptions):
        register(Sampler(name=fn.__name__, fn=fn,
                         capabilities=Capabilities(stochastic=False, order=1),
                         citation="a time-limit test sampler"))


@pytest.fixture
def bench(monkeypatch, tmp_path):
    for loaded in bench_environment(monkeypatch, tmp_path):
        with_hanging = plugin_manager.load_plugins(
            extra=[("bench_plugins", bench_plugins), ("hanging", sys.modules[__name__])])
        assert not with_hanging.failures, with_hanging.failures
        monkeypatch.setattr(plugin_manager, "_default", with_hanging)
        yield with_hanging


SUITE = """
experiment = "limited"
model = "gmm-ring-2d"
steps = [2]
num_samples = 8
batch_size = 8
device = "cpu"
trial_time_limit = {limit}

[samplers.euler]
[samplers.{hanging}]
[samplers.heun]

[metrics.msn]
"""


def _trials(tmp_path):
    lines = (tmp_path / "runs/limited/trials.jsonl").read_text().splitlines()
    return {r["name"]: r for r in map(json.loads, lines) if r["kind"] == "trial"}


def test_a_hanging_trial_fails_at_its_limit_and_the_suite_goes_on(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "limited.toml", SUITE.format(limit=5, hanging="hangs"))
    started = time.monotonic()
    assert harness("run", suite, "--quiet") == exit_codes.TRIALS_FAILED
    took = time.monotonic() - started
    assert 5 <= took < 60
    reason = "TrialTimeout: trial exceeded its time limit of 5 s (trial_time_limit)"
    assert f"FAILED hangs-2nfe-seed0: {reason}" in capsys.readouterr().out
    trials = _trials(tmp_path)
    assert {name: r["status"] for name, r in trials.items()} == {
        "euler-2nfe-seed0": "FINISHED", "hangs-2nfe-seed0": "FAILED",
        "heun-3nfe-seed0": "FINISHED"}
    hung = trials["hangs-2nfe-seed0"]
    assert hung["error"] == reason and "time.sleep(3600)" in hung["traceback"]
    assert 5 <= hung["ended"] - hung["started"] < 7
    assert all(r["measured_params"]["trial_time_limit_s"] == 5 for r in trials.values())


def test_a_plugin_that_catches_the_timeout_is_stopped_again(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "limited.toml",
                        SUITE.format(limit=60, hanging="swallows_exceptions"))
    assert harness("run", suite, "--quiet", "--trial-time-limit", "0.5"
                   ) == exit_codes.TRIALS_FAILED
    swallowed = _trials(tmp_path)["swallows_exceptions-2nfe-seed0"]
    assert swallowed["status"] == "FAILED"
    assert swallowed["error"].startswith("TrialTimeout: trial exceeded its time limit of "
                                         "0.5 s")
    # The first ring was caught; the next, RING_AGAIN_S later, ended the trial.
    assert 0.5 + time_limit_module.RING_AGAIN_S <= (
        swallowed["ended"] - swallowed["started"]) < 0.5 + 2 * time_limit_module.RING_AGAIN_S


@pytest.mark.parametrize("given", ["-1", "0"])
def test_a_limit_that_is_not_positive_is_refused_before_the_model_loads(
        bench, tmp_path, capsys, monkeypatch, given):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr("harness.commands.run.load_model", load_model)
    suite = write_suite(tmp_path / "limited.toml", SUITE.format(limit=given,
                                                                hanging="hangs"))
    assert harness("run", suite, "--quiet") == exit_codes.USAGE
    assert f"trial_time_limit must be > 0.0, got {given}" in capsys.readouterr().err
    assert harness("run", suite, "--quiet", "--trial-time-limit", "-2") == exit_codes.USAGE
    assert "trial_time_limit must be > 0.0, got -2.0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_limit_is_no_part_of_any_config_hash(bench):
    raw = {"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}}, "steps": [2, 4],
           "num_samples": 8, "device": "cpu"}
    identity = {"name": "gmm-ring-2d"}
    without = resolve_trials(build_suite(raw, bench), bench, identity)
    limited = build_suite({**raw, "trial_time_limit": 5}, bench)
    assert limited.to_dict()["trial_time_limit"] == 5.0   # shown and logged with the suite
    assert ([t.config_hash for t in resolve_trials(limited, bench, identity)]
            == [t.config_hash for t in without])


# --- the context manager on its own -------------------------------------------------------

def test_the_previous_handler_and_timer_are_restored():
    def outer(signum, frame):
        raise AssertionError("the outer timer rang during the test")

    previous = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        with pytest.raises(TrialTimeout, match="^step exceeded its time limit of 0.2 s "
                                               r"\(limit_s\)$"), \
                time_limit(0.2, "step", "limit_s"):
            time.sleep(5)
        with time_limit(10.0, "step", "limit_s"):
            pass
        assert signal.getsignal(signal.SIGALRM) is outer
        left, interval = signal.getitimer(signal.ITIMER_REAL)
        assert 99.0 < left < 100.0 and interval == 0.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _collective():
    for _ in range(60):
        time.sleep(0.01)
    return "done"


def test_a_collective_in_progress_is_not_left_half_way():
    """A ring inside torch.distributed code waits until that code has returned."""
    collective = types.FunctionType(_collective.__code__, {
        "__name__": "torch.distributed.in_test", "time": time})
    returned = []
    started = time.monotonic()
    with pytest.raises(TrialTimeout), time_limit(0.1, "trial", "trial_time_limit"):
        returned.append(collective())
        time.sleep(5)
    assert returned == ["done"] and time.monotonic() - started >= 0.6


def test_off_the_main_thread_it_says_so_once_and_runs_unlimited(monkeypatch, capsys):
    monkeypatch.setattr(time_limit_module, "_warned", False)
    finished = []

    def work():
        for _ in range(2):
            with time_limit(0.05, "trial", "trial_time_limit"):
                time.sleep(0.2)
            finished.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert finished == [True, True]
    err = capsys.readouterr().err
    assert err.count("warning: trial_time_limit = 0.05 s is not enforced: it runs outside "
                     "the main thread") == 1
