"""An MLflow client that waits out a tracking server's transient errors during a suite.

`RetryingClient` wraps an `MlflowClient`: a public call that fails transiently is tried
again after 0.5, 1, 2, 4, 8, 16, 16, ... s until it succeeds or the budget of
`$HARNESS_TRACKING_RETRY_S` seconds (default `DEFAULT_BUDGET_S`) since its first
attempt has passed; then it raises `TrackingUnavailable`, and the suite drops the
MLflow sink as for any error (`harness.bench.recording.sinks.Sinks`: every trial stays in
`trials.jsonl`, the run exits 3). The start-up check (`tracking.connect`) does not use
it: a wrong address still fails in seconds.

Transient: an HTTP answer 408, 429 or 5xx other than 501, or no usable answer at all (a
refused or dropped connection, a timeout). MLflow reports these as an `MlflowException`
whose cause is the `requests` error, or a `RestException` whose error code maps to the
status, or (MLflow >= 3.18, an answer that is not MLflow's JSON, a proxy's error page)
an `MlflowException` that names the status in its message; a `requests.HTTPError`
(artifact uploads) carries its response. Anything else (a 4xx such as a bad parameter,
an error of a local store) is raised at once.

Each attempt is one MLflow call with MLflow's own retries inside it (urllib3: for the
statuses above and connection errors, `MLFLOW_HTTP_REQUEST_MAX_RETRIES` times, each
request within `MLFLOW_HTTP_REQUEST_TIMEOUT`; during a suite `tracking.SUITE_LIMITS`
sets 2 retries and 30 s). A call therefore gives up at most the budget plus one
attempt's worth after it began: with the suite's limits and a server that accepts
connections but never answers, 60 s + 3 x 30 s and MLflow's backoff of a few seconds.

A call whose answer was lost may have been applied. Repeating most calls is harmless
(tags and terminations overwrite, a parameter re-logged with its value is accepted,
MLflow's SQL store ignores a metric point it already has), except:

* `create_run` would leave a second run RUNNING: every attempt sends the same start
  time, and before trying again the experiment is searched for a run with that start
  time, name and tags, which is adopted if the lost answer had created it. MLflow's own
  retries are turned off for it (they would repeat the request blindly).
* `create_experiment` would be refused as existing: the name is looked up first.
* `log_table` appends to the table already logged: it is tried once.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import HarnessError, ParameterError

#: Seconds a call keeps being retried (from its first attempt) when
#: $HARNESS_TRACKING_RETRY_S is not set.
DEFAULT_BUDGET_S = 60.0
BUDGET_ENV = "HARNESS_TRACKING_RETRY_S"
#: The first wait between attempts, doubled after each until `MAX_DELAY_S`.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 16.0
#: Calls that must not be repeated (see the module docstring).
ONCE = frozenset({"log_table"})


class TrackingUnavailable(HarnessError):
    """The tracking server gave no usable answer within the retry budget."""


def retry_budget_s() -> float:
    """$HARNESS_TRACKING_RETRY_S, a number of seconds >= 0 (0: no retries)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_BUDGET_S
    try:
        budget = float(text)
    except ValueError:
        budget = -1.0
    if not 0 <= budget < float("inf"):
        raise ParameterError(f"${BUDGET_ENV} must be a number of seconds >= 0, got "
                             f"{text!r}")
    return budget


@contextlib.contextmanager
def one_request_per_call() -> Iterator[None]:
    """MLflow's own retries off for a block (`tracking.http_limits` sets the suite's;
    this module sits below that one)."""
    key = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    saved = os.environ.get(key)
    os.environ[key] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def http_status(err: BaseException) -> int | None:
    """The HTTP status an error reports, if it carries one."""
    from mlflow.exceptions import MlflowException, RestException
    from requests.exceptions import HTTPError

    if isinstance(err, RestException):
        return err.get_http_status_code()
    if isinstance(err, HTTPError) and err.response is not None:
        return err.response.status_code
    if isinstance(err, MlflowException):
        # A server's answer that is not MLflow's JSON (a proxy's 502 or 503 page):
        # MLflow >= 3.18 raises it at once, saying the status only in its message
        # (its error code keeps 503 but turns 502 into a 500); earlier versions
        # retried it in urllib3 and raised a RetryError, a connection failure here.
        answer = _NON_JSON_ANSWER.search(str(err))
        return int(answer.group(1)) if answer else None
    return None


#: MLflow's message for a non-JSON answer (`mlflow.utils.rest_utils`).
_NON_JSON_ANSWER = re.compile(r"^API request to endpoint \S+ failed with error code "
                              r"(\d{3}) != \d{3}")


def is_transient(err: BaseException) -> bool:
    """Whether the server may answer the same request later (see the module docstring)."""
    return transient_cause(err) is not None


def transient_cause(err: BaseException) -> str | None:
    """The transient status ("HTTP 503") or failed connection in the error or its causes,
    in a few words; None when there is none."""
    from requests import exceptions as http

    # The last two: the socket's own (refused, reset, broken pipe; timed out).
    no_answer = (http.ConnectionError, http.Timeout, http.RetryError,
                 http.ChunkedEncodingError, ConnectionError, TimeoutError)
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = http_status(current)
        if status is not None:
            transient = status in (408, 429) or (500 <= status < 600 and status != 501)
            return f"HTTP {status}" if transient else None
        if isinstance(current, no_answer):
            return f"{type(current).__name__}: {current}"
        current = current.__cause__ or current.__context__
    return None


class RetryingClient:
    """An `MlflowClient` whose public calls are retried on transient errors."""

    def __init__(self, client: Any, budget_s: float | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.budget_s = retry_budget_s() if budget_s is None else budget_s
        self._sleep = sleep
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if name.startswith("_") or not callable(method) or name in ONCE:
            return method

        def retried(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, lambda: method(*args, **kwargs))
        return retried

    def call(self, name: str, attempt: Callable[[], Any],
             before_retry: Callable[[], Any] | None = None) -> Any:
        """`attempt()` until it succeeds, raises a lasting error or the budget is spent.
        `before_retry()`, if given, runs before each repeat: a result other than None
        (what the failed attempt did after all) is returned instead of repeating."""
        began = self._clock()
        delay = FIRST_DELAY_S
        attempts = 0
        while True:
            attempts += 1
            try:
                found = before_retry() if before_retry is not None and attempts > 1 else None
                result = found if found is not None else attempt()
            except Exception as err:
                cause = transient_cause(err)
                if cause is None:
                    raise
                waited = self._clock() - began
                if waited >= self.budget_s:
                    raise TrackingUnavailable(
                        f"{name} got no usable answer from the tracking server in "
                        f"{waited:.1f} s ({attempts} attempt(s); ${BUDGET_ENV} = "
                        f"{self.budget_s:g} s): {cause}") from err
                if attempts == 1:
                    print(f"warning: tracking: {name} failed ({cause}); retrying for up "
                          f"to {self.budget_s:g} s", file=sys.stderr)
                self._sleep(min(delay, self.budget_s - waited))
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            if attempts > 1:
                print(f"note: tracking: {name} succeeded at attempt {attempts}, after "
                      f"{self._clock() - began:.1f} s", file=sys.stderr)
            return result

    def create_run(self, experiment_id: str, start_time: int | None = None,
                   tags: dict[str, Any] | None = None,
                   run_name: str | None = None) -> Any:
        """A run, created once even if an answer is lost (see the module docstring)."""
        start_time = int(time.time() * 1000) if start_time is None else start_time
        wanted = {k: str(v) for k, v in (tags or {}).items()}

        def create() -> Any:
            with one_request_per_call():
                return self.client.create_run(experiment_id, start_time=start_time,
                                              tags=tags, run_name=run_name)

        def created_already() -> Any:
            runs = self.client.search_runs([experiment_id],
                                           f"attributes.start_time = {start_time}")
            return next((run for run in runs
                         if (run_name is None or run.info.run_name == run_name)
                         and wanted.items() <= run.data.tags.items()), None)

        return self.call("create_run", create, created_already)

    def create_experiment(self, name: str, *args: Any, **kwargs: Any) -> str:
        """An experiment's id, created once even if an answer is lost."""
        def created_already() -> str | None:
            found = self.client.get_experiment_by_name(name)
            return None if found is None else found.experiment_id

        return self.call("create_experiment",
                         lambda: self.client.create_experiment(name, *args, **kwargs),
                         created_already)
