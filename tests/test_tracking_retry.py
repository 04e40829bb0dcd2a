"""A tracking server that hiccups mid-suite: transient errors are waited out, lasting ones
are not, and a budget spent drops MLflow with every trial kept in trials.jsonl.

The errors come from MLflow's own client talking to a local proxy (`tests.flaky_proxy`)
that answers with the status under test, so they have the shapes MLflow really raises;
the suites run against a real `mlflow server` on 127.0.0.1 behind that proxy.
"""

from __future__ import annotations

import json
import math

import pytest

from harness.bench import exit_codes
from harness.bench.recording.tracking import http_limits
from harness.bench.recording.tracking_retry import (
    BUDGET_ENV,
    RetryingClient,
    TrackingUnavailable,
    is_transient,
)
from tests.bench_support import (
    bench_environment,
    client_for,
    free_port,
    harness,
    shared_server,
    trial_runs,
    tripwire_suite,
    write_suite,
)
from tests.flaky_proxy import FlakyProxy
from tests.plugins.bench_plugins import TRIPWIRE

#: One request, no retries inside MLflow: each answer reaches the classifier as it is.
ONE_REQUEST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def _error_from(uri: str) -> Exception:
    """What MLflow's client raises when a request to `uri` fails."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with http_limits(ONE_REQUEST, override=True), pytest.raises(MlflowException) as caught:
        MlflowClient(uri).get_experiment("1")
    return caught.value


# HTTP's own meaning of each answer: may the same request succeed later?
ANSWERS = [
    (503, b"upstream down", True),
    (502, b"bad gateway", True),
    (500, b'{"error_code": "INTERNAL_ERROR", "message": "database is locked"}', True),
    (429, b'{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}', True),
    (400, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"}', False),
    (404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}', False),
    (403, b'{"error_code": "PERMISSION_DENIED", "message": "no"}', False),
    (501, b"not implemented", False),
]


@pytest.mark.parametrize(("status", "body", "transient"), ANSWERS,
                         ids=[str(a[0]) for a in ANSWERS])
def test_which_server_answers_are_transient(status, body, transient):
    proxy = FlakyProxy()
    try:
        proxy.answer(status, body)
        assert is_transient(_error_from(proxy.uri)) is transient
    finally:
        proxy.stop()


def test_an_error_carrying_its_status_is_judged_by_it():
    """What MLflow raises when its own retries do not cover a status (a server's JSON
    error, an artefact upload's `raise_for_status`)."""
    import requests
    from mlflow.exceptions import RestException

    def rest(code):
        return RestException({"error_code": code, "message": "from the server"})

    def http_error(status):
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(f"{status}", response=response)

    assert is_transient(rest("REQUEST_LIMIT_EXCEEDED"))            # 429
    assert is_transient(rest("TEMPORARILY_UNAVAILABLE"))           # 503
    assert not is_transient(rest("RESOURCE_ALREADY_EXISTS"))       # 400
    assert not is_transient(rest("NOT_IMPLEMENTED"))               # 501
    assert is_transient(http_error(429)) and is_transient(http_error(504))
    assert not is_transient(http_error(404)) and not is_transient(http_error(413))


def test_no_answer_at_all_is_transient():
    refused = _error_from(f"http://127.0.0.1:{free_port()}")
    assert is_transient(refused)
    server = FlakyProxy()
    hangs_up = FlakyProxy(server.uri)
    try:
        server.answer(200, b"{}")
        hangs_up.drop_answer_of = "/"
        dropped = _error_from(hangs_up.uri)
        assert hangs_up.log[0][2] == "dropped"
        assert is_transient(dropped)
    finally:
        hangs_up.stop()
        server.stop()
    assert not is_transient(FileNotFoundError("samples.png"))   # a local error


class FakeTime:
    """A clock that moves only when slept on."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """A client whose `log_batch` fails with `error` the first `failures` times."""

    def __init__(self, failures: float, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def log_batch(self, run_id, params=()):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return f"logged {run_id}"


UNAVAILABLE = ConnectionRefusedError(111, "Connection refused")


def test_the_backoff_doubles_and_stops_at_the_budget():
    time = FakeTime()
    client = RetryingClient(Flaky(math.inf, UNAVAILABLE), budget_s=10.0,
                            sleep=time.sleep, clock=time.clock)
    with pytest.raises(TrackingUnavailable, match=r"log_batch got no usable answer .* "
                                                  r"in 10\.0 s \(6 attempt"):
        client.log_batch("run")
    # 0.5, 1, 2, 4, then what is left of the 10 s; the last attempt at the budget.
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]
    assert client.client.calls == 6


def test_the_wait_between_attempts_is_capped():
    time = FakeTime()
    client = RetryingClient(Flaky(math.inf, UNAVAILABLE), budget_s=100.0,
                            sleep=time.sleep, clock=time.clock)
    with pytest.raises(TrackingUnavailable):
        client.log_batch("run")
    assert max(time.sleeps) == 16.0 and sum(time.sleeps) == 100.0


def test_a_recovered_call_returns_its_result():
    time = FakeTime()
    client = RetryingClient(Flaky(2, UNAVAILABLE), budget_s=60.0, sleep=time.sleep,
                            clock=time.clock)
    assert client.log_batch("run") == "logged run"
    assert time.sleeps == [0.5, 1.0]


def test_a_lasting_error_is_raised_at_once():
    from mlflow.exceptions import RestException

    time = FakeTime()
    bad = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"})
    client = RetryingClient(Flaky(1, bad), budget_s=60.0, sleep=time.sleep,
                            clock=time.clock)
    with pytest.raises(RestException):
        client.log_batch("run")
    assert time.sleeps == [] and client.client.calls == 1


class Run:
    def __init__(self, start_time, tags, run_name):
        self.info = type("Info", (), {"run_name": run_name, "start_time": start_time})()
        self.data = type("Data", (), {"tags": dict(tags)})()


class LosesAnswers:
    """A store whose first `create_run` is applied but its answer lost."""

    def __init__(self):
        self.runs: list[Run] = []

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        self.runs.append(Run(start_time, tags, run_name))
        if len(self.runs) == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.runs[-1]

    def search_runs(self, experiment_ids, filter_string):
        wanted = int(filter_string.rsplit("=", 1)[1])
        return [r for r in self.runs if r.info.start_time == wanted]


def test_a_run_whose_answer_was_lost_is_adopted_not_created_twice():
    time = FakeTime()
    store = LosesAnswers()
    client = RetryingClient(store, budget_s=60.0, sleep=time.sleep, clock=time.clock)
    run = client.create_run("1", tags={"config_hash": "abc"}, run_name="euler-2nfe")
    assert len(store.runs) == 1 and run is store.runs[0]
    # Another run of the same name but other tags is not taken for it.
    store.runs.clear()
    store.runs.append(Run(123, {"config_hash": "other"}, "euler-2nfe"))
    client.create_run("1", start_time=123, tags={"config_hash": "abc"},
                      run_name="euler-2nfe")
    assert [r.data.tags["config_hash"] for r in store.runs] == ["other", "abc"]


def test_a_bad_budget_is_refused(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "soon")
    with pytest.raises(Exception, match=r"HARNESS_TRACKING_RETRY_S must be a number of "
                                        r"seconds >= 0, got 'soon'"):
        RetryingClient(object())


# --- whole suites through the proxy --------------------------------------------------------

@pytest.fixture
def bench(monkeypatch, tmp_path):
    # MLflow's own retries without their waits: the test's time goes to ours.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    yield from bench_environment(monkeypatch, tmp_path, store=False)


@pytest.fixture
def proxy():
    proxy = FlakyProxy(shared_server().uri)
    yield proxy
    proxy.stop()


def _trials(tmp_path, experiment):
    lines = (tmp_path / f"runs/{experiment}/trials.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "trial"]


NAMES = {f"tripwire_euler-{n}nfe-seed{s}" for n in (2, 3) for s in (0, 1)}


def test_a_server_that_hiccups_mid_suite_loses_nothing(bench, proxy, tmp_path, capsys):
    suite = write_suite(tmp_path / "hiccups.toml", tripwire_suite("hiccups"))

    def hiccup():  # in trial 2 (sampler call 1 is the warm-up)
        proxy.unavailable = 7            # more than MLflow's own 2 retries per call
        proxy.drop_answer_of = "/runs/create"   # the next trial's run, created unseen
    TRIPWIRE.arm(at=3, action=hiccup)
    assert harness("run", suite, "--quiet", "--tracking-uri", proxy.uri) == exit_codes.SUCCESS
    err = capsys.readouterr().err
    assert "retrying for up to 60 s" in err and "succeeded at attempt" in err
    assert [what for *_, what in proxy.log].count(503) == 7
    assert [(method, what) for method, path, what in proxy.log
            if path.endswith("/runs/create")].count(("POST", "dropped")) == 1
    # One run per trial, all FINISHED: the dropped one was adopted, not made twice.
    runs = trial_runs(shared_server().uri, "hiccups")
    assert sorted(r.info.run_name for r in runs) == sorted(NAMES)
    assert {r.info.status for r in runs} == {"FINISHED"}
    client = client_for(shared_server().uri)
    assert all(client.get_run(r.info.run_id).data.params["sampler"] == "tripwire_euler"
               for r in runs)


def test_a_server_down_past_the_budget_is_dropped(bench, proxy, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "1")
    suite = write_suite(tmp_path / "down.toml", tripwire_suite("down"))
    TRIPWIRE.arm(at=3, action=lambda: setattr(proxy, "unavailable", math.inf))
    code = harness("run", suite, "--quiet", "--tracking-uri", proxy.uri)
    captured = capsys.readouterr()
    assert code == exit_codes.RECORDING_INCOMPLETE, captured.err
    assert "4 trials finished, 0 failed" in captured.out
    assert "retrying for up to 1 s" in captured.err
    # What stopped, after how long, and where every trial is instead.
    warning = next(line for line in captured.err.splitlines()
                   if "stopped mid-suite" in line)
    assert warning.startswith(f"warning: MLflow ({proxy.uri}, experiment 'down')")
    assert "TrackingUnavailable" in warning and "got no usable answer" in warning
    assert "HARNESS_TRACKING_RETRY_S = 1 s" in warning
    assert "runs/down/trials.jsonl" in warning
    trials = _trials(tmp_path, "down")
    assert {r["name"] for r in trials} == NAMES
    assert {r["status"] for r in trials} == {"FINISHED"}
