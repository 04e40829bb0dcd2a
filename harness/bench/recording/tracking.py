"""MLflow tracking: one parent run per suite invocation, one nested run per trial.

The tracking URI is `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else the suite's
`tracking_uri`, else the embedded store `sqlite:///mlflow.db` in the working directory.
`connect` checks that the store answers *before* any compute, with no retries and a short
timeout, so a wrong address fails in seconds with a clear message; a SQLite store is
first checked for a writable folder (no minutes of retries on a read-only path), and
its creation is serialised by a file lock beside it, so that two processes starting on
a fresh store do not race through MLflow's migrations.

`MLflowSink` talks to MLflow through `MlflowClient` with explicit run ids (no global
"active run" state), so a trial's run can be ended as KILLED from an interrupt handler
and nested runs never leak into each other. Every trial run carries the tag
`config_hash`; `finished_config_hashes` is what `--resume` asks. Every run also carries
its process's host and pid, so that runs a dead process left RUNNING are closed as
KILLED when the next suite starts (`harness.bench.recording.stale_runs`); and a suite that ends
for any reason ends the trial runs it still has open.

The experiment is described for the dashboard when a suite starts, and the suite run
gets the report as artefacts, its leaderboard also as description and table
(`harness.bench.recording.mlflow_view`). A SQLite store that `connect` creates loses MLflow's own
empty `Default` experiment, so that only the harness's experiments are listed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ...errors import HarnessError, unknown_name
from . import stale_runs
from .mlflow_view import (EXPERIMENT_KIND_TAG, LEADERBOARD_TABLE, NOTE_TAG, TRAINING_KIND,
                          describe_experiment, hide_empty_default_experiment,
                          leaderboard_frame, run_description)
from .record import TrialRecord
from .sinks import FAILED, KILLED, SuiteInfo, Trial
from ..configuration.suite import flatten
from .tracking_retry import RetryingClient

if TYPE_CHECKING:  # pandas is imported by mlflow.search_runs, when it is called
    import pandas as pd

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: A trial run's bootstrap replicates, their metrics' least values and directions
#: (`TrialRecord`), as a JSON artefact {"replicates": {key: [...]}, "minimums": {key:
#: value}, "higher_is_better": {key: bool}}.
REPLICATES_ARTIFACT = "replicates.json"
#: During the start-up check: fail fast. During a suite: a few retries, then give up on
#: MLflow for the rest of the suite (the local JSONL keeps every trial).
CHECK_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
SUITE_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: How long a process waits for another one creating the same SQLite store.
STORE_LOCK_TIMEOUT_S = 300


class TrackingError(HarnessError):
    """The tracking store cannot be used; says which URI and what to do."""


def resolve_tracking_uri(option: Optional[str], suite_uri: str = "") -> str:
    return option or os.environ.get("MLFLOW_TRACKING_URI") or suite_uri or DEFAULT_TRACKING_URI


def absolute_uri(uri: str) -> str:
    """A relative SQLite URI made absolute against the working directory now.

    MLflow caches one store per URI string for the life of the process, so a relative
    `sqlite:///mlflow.db` would keep pointing at the first working directory's file.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = uri[len(prefix):]
        if path and not path.startswith(":memory:"):
            return prefix + os.path.abspath(path)
    return uri


@contextlib.contextmanager
def http_limits(limits: dict[str, str], override: bool) -> Iterator[None]:
    """Set MLflow's HTTP retry/timeout variables for a block (user settings win unless
    `override`), restoring the environment afterwards."""
    saved = {k: os.environ.get(k) for k in limits}
    for key, value in limits.items():
        if override or key not in os.environ:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sqlite_path(uri: str) -> Optional[str]:
    """The database file of a `sqlite:///` URI (None for other stores and :memory:)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = absolute_uri(uri)[len(prefix):].split("?", 1)[0]
    return None if not path or path.startswith(":memory:") else path


def check_sqlite_store(uri: str) -> None:
    """Fail at once, naming the path, when a SQLite store cannot be written: MLflow
    itself retries for minutes before saying so."""
    path = sqlite_path(uri)
    if path is None:
        return
    folder = os.path.dirname(path) or "."
    problem = ""
    if os.path.isfile(folder):
        problem = f"its folder {folder!r} is a file"
    elif not os.path.isdir(folder):
        problem = f"its folder {folder!r} does not exist"
    elif os.path.isdir(path):
        problem = f"{path!r} is a folder"
    elif os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        problem = f"{path!r} is not readable and writable"
    else:
        try:  # SQLite writes a journal beside the database
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".mlflow-probe-"):
                pass
        except OSError as err:
            problem = f"its folder {folder!r} is not writable ({err.strerror})"
    if problem:
        raise TrackingError(f"the MLflow tracking store {uri!r} cannot be written: "
                            f"{problem}. Pass another --tracking-uri; nothing was computed")


def check_store_exists(uri: str) -> None:
    """For a reader: a SQLite store that is not there is an error naming the file (MLflow
    would create an empty database, and its lock, and then find no experiment)."""
    path = sqlite_path(uri)
    if path is not None and not os.path.isfile(path):
        raise TrackingError(f"the MLflow tracking store {uri!r} does not exist (no file "
                            f"{path}); run `harness run` in this folder first, or pass "
                            f"--tracking-uri")


@contextlib.contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, an exclusive file lock beside it while it is opened (and, if
    new, created and migrated), so that concurrent processes take turns."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(path + ".lock")
    try:
        lock.acquire(timeout=STORE_LOCK_TIMEOUT_S)
    except Timeout:
        raise TrackingError(f"the MLflow tracking store {uri!r} stayed locked for "
                            f"{STORE_LOCK_TIMEOUT_S} s by another process creating it "
                            f"({path}.lock); nothing was computed") from None
    try:
        yield
    finally:
        lock.release()


#: The operating system's reason inside a wrapped connection error: `[Errno 111] Connection
#: refused`, the last words of a long line that names the request, the pool and the socket.
_OS_REASON = re.compile(r"\[Errno -?\d+\] [^'\"()\[\]]+")
#: The longest reason shown when the error has no OS reason in it (cut between words).
REASON_CHARS = 300


def failure_reason(err: BaseException) -> str:
    """Why a request failed, in a few words: the OS's reason when the message holds one,
    else the message's first line, cut at a word boundary if it is long."""
    text = str(err).strip()
    found = _OS_REASON.findall(text)
    if found:
        return found[-1].strip()
    first = text.splitlines()[0] if text else ""
    if len(first) <= REASON_CHARS:
        return first
    return first[:REASON_CHARS].rsplit(" ", 1)[0] + " ..."


def connect(uri: str) -> Any:
    """An `MlflowClient` for `uri`, after checking the store answers (no compute yet);
    from then on its calls wait out a server's transient errors
    (`harness.bench.recording.tracking_retry`)."""
    check_sqlite_store(uri)  # first: MLflow takes seconds to import
    from mlflow.tracking import MlflowClient

    try:
        with http_limits(CHECK_LIMITS, override=True), store_creation_lock(uri):
            path = sqlite_path(uri)
            created = path is not None and not os.path.exists(path)
            client = MlflowClient(tracking_uri=absolute_uri(uri))
            client.search_experiments(max_results=1)
            if created:
                hide_empty_default_experiment(client)
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(
            f"the MLflow tracking store {uri!r} is not reachable "
            f"({type(err).__name__}: {failure_reason(err)}). Start the server, pass another "
            f"--tracking-uri, or use the embedded store {DEFAULT_TRACKING_URI!r}; "
            f"nothing was computed") from None
    return RetryingClient(client)


def experiment_id(client: Any, name: str, create: bool) -> Optional[str]:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        return None
    return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})


def _all_runs(client: Any, experiment: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_config_hashes(client: Any, experiment: str) -> set[str]:
    """Config hashes that already have a FINISHED trial run in the experiment."""
    exp = experiment_id(client, experiment, create=False)
    if exp is None:
        return set()
    runs = _all_runs(client, exp, "attributes.status = 'FINISHED' and "
                                  "tags.`harness.kind` = 'trial'")
    return {r.data.tags["config_hash"] for r in runs if "config_hash" in r.data.tags}


def search_experiment_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Every run of the experiment as `mlflow.search_runs` gives it (a DataFrame)."""
    import mlflow

    check_store_exists(uri)  # reading must not create an empty store
    client = connect(uri)
    if client.get_experiment_by_name(experiment) is None:
        names = [e.name for e in client.search_experiments(max_results=1000)]
        raise TrackingError(f"{uri}: {unknown_name('experiment', experiment, names)}")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(absolute_uri(uri))
    try:
        return mlflow.search_runs(experiment_names=[experiment], max_results=100000)
    finally:
        mlflow.set_tracking_uri(previous)


def run_replicates(uri: str, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Run id -> what a trial run logged as `REPLICATES_ARTIFACT`, for the runs that
    have one."""
    client = connect(uri)
    out: dict[str, dict[str, Any]] = {}
    # One small file per run: MLflow's progress bar would print a line for each.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for run_id in run_ids:
        names = {f.path for f in client.list_artifacts(run_id)}
        if REPLICATES_ARTIFACT in names:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run_id, REPLICATES_ARTIFACT, tmp)
                out[run_id] = json.loads(Path(path).read_text())
    return out


def metric_key(name: str) -> str:
    """MLflow allows letters, digits, _ - . space : / in keys; other characters become _."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    out = []
    for key, value in values.items():
        text = "" if value is None else str(value)
        out.append(Param(metric_key(key)[:250], text[:6000]))
    return out


class MLflowSink:
    """Records a suite in MLflow; see the module docstring for the run layout."""

    def __init__(self, client: Any, uri: str, experiment: str):
        self.client = client
        self.uri = uri
        self.experiment = experiment
        self.where = f"MLflow ({uri}, experiment {experiment!r})"
        self.experiment_id: Optional[str] = None
        self.parent_id: Optional[str] = None
        self.info: Optional[SuiteInfo] = None
        self.trial_runs: dict[str, str] = {}  # config hash -> run id
        self.open_runs: set[str] = set()  # trial runs created and not yet ended
        self.process_tags = stale_runs.process_tags()

    # --- small helpers -----------------------------------------------------------------
    def _log(self, run_id: str, params: Optional[dict[str, Any]] = None,
             metrics: Optional[dict[str, float]] = None,
             tags: Optional[dict[str, str]] = None,
             history: Optional[list[tuple[str, float, int]]] = None) -> None:
        """log_batch in chunks within MLflow's limits (100 params or tags, 1000 metrics);
        `history` holds (key, value, step) points, the same key at several steps."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        points = [(k, v, 0) for k, v in (metrics or {}).items()] + list(history or [])
        metric_list = [Metric(metric_key(k), float(v), now, step)
                       for k, v, step in points if v is not None]
        param_list = _params(params or {})
        tag_list = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        with http_limits(SUITE_LIMITS, override=False):
            for i in range(0, len(param_list), 100):
                self.client.log_batch(run_id, params=param_list[i:i + 100])
            for i in range(0, len(tag_list), 100):
                self.client.log_batch(run_id, tags=tag_list[i:i + 100])
            for i in range(0, len(metric_list), 1000):
                self.client.log_batch(run_id, metrics=metric_list[i:i + 1000])

    def _end(self, run_id: str, status: str) -> None:
        with http_limits(SUITE_LIMITS, override=False):
            self.client.set_terminated(run_id, status=status)
        self.open_runs.discard(run_id)

    def _close_stale_runs(self) -> None:
        """End the runs of this experiment that a dead process left RUNNING; a failure
        here is only reported (it must not stop this suite's own tracking)."""
        try:
            with http_limits(SUITE_LIMITS, override=False):
                closed = stale_runs.close_stale_runs(self.client, self.experiment_id)
        except Exception as err:
            print(f"warning: could not close stale RUNNING runs: {type(err).__name__}: "
                  f"{err}", file=sys.stderr)
            return
        if closed:
            pids = sorted({r.data.tags[stale_runs.PID_TAG] for r in closed})
            print(f"note: closed {len(closed)} run(s) of experiment {self.experiment!r} "
                  f"left RUNNING by process(es) {', '.join(pids)}, which no longer exist, "
                  f"as KILLED", file=sys.stderr)

    def _describe_experiment(self) -> None:
        """The experiment's kind, note and saved view for the dashboard; a store that
        refuses them is reported, and the suite is recorded all the same."""
        try:
            with http_limits(SUITE_LIMITS, override=False):
                describe_experiment(self.client, self.experiment_id, self.experiment)
        except Exception as err:
            print(f"warning: could not describe experiment {self.experiment!r} for the "
                  f"dashboard: {type(err).__name__}: {err}", file=sys.stderr)

    # --- the sink interface ------------------------------------------------------------
    def suite_started(self, info: SuiteInfo) -> None:
        self.info = info
        suite = info.suite
        with http_limits(SUITE_LIMITS, override=False):
            self.experiment_id = experiment_id(self.client, self.experiment, create=True)
        self._describe_experiment()
        self._close_stale_runs()
        with http_limits(SUITE_LIMITS, override=False):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run = self.client.create_run(
                self.experiment_id, run_name=f"{suite.name}-{stamp}",
                tags={"harness.kind": "suite", "harness.suite": suite.name,
                      **self.process_tags})
        self.parent_id = run.info.run_id
        params = {f"suite.{k}": v for k, v in flatten(suite.to_dict()).items()}
        params.update({f"model.{k}": v for k, v in flatten(info.model_identity).items()})
        params.update(info.environment)
        self._log(self.parent_id, params=params,
                  metrics={"trials_planned": len(info.trials),
                           "trials_skipped": len(info.skipped)})

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None:
        self._log(self.parent_id, params=params, metrics=values)

    def trial_params(self, trial: Trial) -> dict[str, Any]:
        """Everything that identifies the trial, flat, as MLflow params: its record's
        (`TrialRecord.mlflow_params`), then the suite's batch size, the sampler's origin
        and the environment."""
        info = self.info
        params = TrialRecord.planned(trial).mlflow_params()
        params["batch_size"] = info.suite.batch_size
        origin = info.sampler_origins.get(trial.sampler, {})
        params.update({f"sampler_origin.{k}": v for k, v in origin.items()})
        params.update(info.environment)
        return params

    def trial_started(self, trial: Trial) -> None:
        with http_limits(SUITE_LIMITS, override=False):
            run = self.client.create_run(
                self.experiment_id, run_name=trial.name,
                tags={"mlflow.parentRunId": self.parent_id,
                      "harness.suite": self.info.suite.name, **self.process_tags,
                      **TrialRecord.planned(trial).mlflow_tags()})
        self.trial_runs[trial.config_hash] = run.info.run_id
        self.open_runs.add(run.info.run_id)
        self._log(run.info.run_id, params=self.trial_params(trial))

    def trial_ended(self, record: TrialRecord) -> None:
        run_id = self.trial_runs[record.config_hash]
        # A param keeps its first value: what the trial is went in when it started.
        self._log(run_id, params=record.measured_params, metrics=record.mlflow_metrics(),
                  tags=record.mlflow_tags())
        try:
            with http_limits(SUITE_LIMITS, override=False):
                for path in record.artifacts.values():
                    self.client.log_artifact(run_id, path)
                if record.replicates:
                    self.client.log_dict(
                        run_id, {"replicates": record.replicates,
                                 "minimums": record.replicate_minimums,
                                 "higher_is_better": record.replicate_higher_is_better},
                        REPLICATES_ARTIFACT)
        finally:  # the run is ended even if an artefact is refused
            self._end(run_id, record.status)

    def trial_interrupted(self, trial: Trial, reason: str) -> None:
        run_id = self.trial_runs.get(trial.config_hash)
        if run_id is not None:
            self._log(run_id, tags={"error": f"interrupted: {reason}"})
            self._end(run_id, KILLED)

    def suite_ended(self, records_of_run: list[TrialRecord], status: str,
                    wall_s: float) -> None:
        """Counts and wall-clock of this invocation, then end the parent run (and any
        trial run still open: interrupted while it was being recorded)."""
        try:
            for run_id in sorted(self.open_runs):
                self._end(run_id, KILLED)
            failed = sum(r.status == FAILED for r in records_of_run)
            self._log(self.parent_id, metrics={
                "trials_failed": failed, "trials_run": len(records_of_run),
                "suite_wall_s": wall_s})
        finally:
            self._end(self.parent_id, status)

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None:
        """The report's files as artefacts of the parent run, the leaderboard as its
        description and as a table MLflow renders, and the per-sampler series (`fid/heun`
        at step = NFE) as metric histories: each metric against NFE in the run's charts."""
        self._log(self.parent_id, history=series)
        page = files.get("leaderboard.md")
        text = Path(page).read_text(encoding="utf-8") if page is not None else ""
        with http_limits(SUITE_LIMITS, override=False):
            for path in files.values():
                self.client.log_artifact(self.parent_id, str(path))
            if text:
                self.client.set_tag(self.parent_id, NOTE_TAG, run_description(text))
                self.client.log_table(self.parent_id, leaderboard_frame(text),
                                      LEADERBOARD_TABLE)
