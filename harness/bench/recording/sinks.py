"""Where results go: a tiny sink interface, the local JSONL sink that never loses a trial,
and the sinks of a run made from what plugins register.

The runner measures; sinks record. The runner calls, in order,

    suite_started(info)                       once, before any trial
    suite_values(values, params)              once-per-suite measurements (reference NLL)
    trial_started(trial)                      before a trial computes anything
    trial_ended(record)                       FINISHED or FAILED, with metrics or error
    trial_interrupted(trial, reason)          Ctrl-C / SIGTERM inside a trial
    suite_ended(records, status, wall_s)      FINISHED, FAILED (some trial) or KILLED;
                                              the suite's wall-clock, as the runner measured it

and the command, once it has written the report (tables, plots) from what was recorded,

    report_written(files, series)             the report's files, and each metric's mean
                                              per sampler as (key, value, NFE) points

A sink implements the methods it needs; the others are not called. `Sinks` fans every
call out, turning the runner's `TrialResult` into the one `TrialRecord`
(`harness.bench.recording.record`) that every sink receives, and isolates the sinks from each
other: one that raises is reported and dropped, so a tracking server going away
mid-suite never stops the suite nor the other sinks. `make_sinks` makes a run's sinks
from the factories plugins register (`harness_register_sinks`); the built-in ones,
`LocalSink` and `harness.bench.recording.tracking.MLflowSink`, are registered by the plugin
`harness_plugins.sinks`. `LocalSink` appends every trial to `trials.jsonl` as it ends
(flushed and fsynced per line, and cut back if the disk fills mid-line, so the file never
ends torn), which is the copy of record when MLflow is unreachable and what `--resume`
reads besides MLflow (`finished_hashes`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from ...plugin.manager import LoadedPlugins
from .atomic import append_complete
from .record import TrialRecord, TrialResult, finite_or_none, strict_json
from ..configuration.suite import Suite, Trial

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass
class SuiteInfo:
    """What every sink is told about the suite before it starts."""

    suite: Suite
    #: The trials this invocation runs (after --resume removed finished ones).
    trials: list[Trial]
    #: Trials of the suite skipped because a finished run already exists (--resume).
    skipped: list[Trial]
    model_identity: dict[str, Any]
    #: device, dtype and versions (harness, torch, python, mlflow...).
    environment: dict[str, str]
    #: Per sampler: where it comes from (plugin module, distribution, version).
    sampler_origins: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: This run of the suite, by the time it started (`20261130T095428`): every record
    #: of it carries this stamp.
    invocation: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))

    @property
    def all_trials(self) -> list[Trial]:
        return self.skipped + self.trials


class Sink(Protocol):
    """How results are recorded. A sink implements the methods it needs."""

    def suite_started(self, info: SuiteInfo) -> None: ...

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None: ...

    def trial_started(self, trial: Trial) -> None: ...

    def trial_ended(self, record: TrialRecord) -> None: ...

    def trial_interrupted(self, trial: Trial, reason: str) -> None: ...

    def suite_ended(self, records: list[TrialRecord], status: str, wall_s: float
                    ) -> None: ...

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None: ...


class Sinks:
    """Fans calls out to several sinks; a sink that raises is warned about and dropped.

    `dropped` holds (sink, error) for each sink that stopped recording, and (its
    `SinkSpec`, error) for each that could not be made (`make_sinks`): either way the
    run did not record everything, and `unrecorded` names the trials that sink lacks.
    """

    def __init__(self, sinks: Iterable[Any], unmade: Iterable[tuple[Any, str]] = ()):
        self.active = list(sinks)
        self.dropped: list[tuple[Any, str]] = list(unmade)
        #: The stamp of the invocation running (`SuiteInfo.invocation`): every record
        #: carries it.
        self.invocation = ""
        #: Per sink (by id): the names of the trials it recorded (`trial_ended` returned).
        self._recorded: dict[int, set[str]] = {}

    def unrecorded(self, sink: Any, results: Iterable[TrialResult]) -> list[str]:
        """The trials of `results` that `sink` did not record, in order."""
        done = self._recorded.get(id(sink), set())
        return [r.trial.name for r in results if r.trial.name not in done]

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.active):
            call = getattr(sink, method, None)
            if call is None:
                continue
            try:
                call(*args)
            except Exception as err:  # a recorder failing must not stop the measurements
                message = f"{type(err).__name__}: {err}"
                print(f"warning: {describe(sink)} stopped recording after an error in "
                      f"{method}: {message}; results continue in the other sinks",
                      file=sys.stderr)
                self.active.remove(sink)
                self.dropped.append((sink, message))
                continue
            if method == "trial_ended":
                self._recorded.setdefault(id(sink), set()).add(args[0].name)

    def _record(self, result: TrialResult) -> TrialRecord:
        return TrialRecord.from_result(result, invocation=self.invocation)

    def suite_started(self, info: SuiteInfo) -> None:
        self.invocation = info.invocation
        self._each("suite_started", info)

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None:
        self._each("suite_values", values, params)

    def trial_started(self, trial: Trial) -> None:
        self._each("trial_started", trial)

    def trial_ended(self, result: TrialResult) -> None:
        self._each("trial_ended", self._record(result))

    def trial_interrupted(self, trial: Trial, reason: str) -> None:
        self._each("trial_interrupted", trial, reason)

    def suite_ended(self, results: list[TrialResult], status: str, wall_s: float) -> None:
        self._each("suite_ended", [self._record(r) for r in results], status, wall_s)

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None:
        self._each("report_written", files, series)


def describe(sink: Any) -> str:
    """Where a sink records, for messages: its `where` (e.g. the trials.jsonl path), else
    its registered name (a sink that could not be made), else its class."""
    return str(getattr(sink, "where", None) or getattr(sink, "name", None)
               or type(sink).__name__)


@dataclass(frozen=True)
class SinkContext:
    """What a sink factory is given, once per run (`harness_register_sinks`)."""

    #: The run's report folder (`--out`/<experiment>): trials.jsonl, tables, plots.
    out_dir: Path
    suite: Suite
    #: The MLflow experiment the run records into.
    experiment: str
    tracking_uri: str
    #: An `MlflowClient` connected to `tracking_uri`, or None where there is none.
    client: Any = None


def make_sinks(plugins: LoadedPlugins, context: SinkContext) -> Sinks:
    """The run's sinks: every registered sink factory called with `context`, in the
    order of their names. One that returns None stays out of this run; one that raises
    is reported and the run goes on without it (and is not complete: `Sinks.dropped`)."""
    made, unmade = [], []
    for name, entry in plugins.sinks.entries():
        try:
            sink = entry.item.make(context)
        except Exception as err:  # a recorder failing must not stop the measurements
            message = f"{type(err).__name__}: {err}"
            print(f"warning: sink {name!r} of {entry.origin} could not be made: {message}; "
                  f"results go to the other sinks", file=sys.stderr)
            unmade.append((entry.item, f"not made: {message}"))
            continue
        if sink is not None:
            made.append(sink)
    return Sinks(made, unmade)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and force it to disk, so a crash right after keeps it; a line
    that cannot be written whole is not written at all."""
    line = json.dumps(strict_json(record), default=str, allow_nan=False) + "\n"
    append_complete(path, line.encode("utf-8"))


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file; a torn last line (killed mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"warning: {path}:{number}: unreadable line skipped", file=sys.stderr)
    return records


def finished_hashes(path: Path) -> set[str]:
    """Config hashes of the FINISHED trials recorded in a `trials.jsonl`."""
    return {r["config_hash"] for r in read_lines(path)
            if r.get("kind") == "trial" and r.get("status") == FINISHED
            and isinstance(r.get("config_hash"), str)}


class LocalSink:
    """Appends suite and trial records to `<directory>/trials.jsonl` as they happen (the
    report is written into the same folder, by the command)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "trials.jsonl"
        self.where = str(self.path)
        self.invocation = ""

    def suite_started(self, info: SuiteInfo) -> None:
        self.invocation = info.invocation
        append_line(self.path, {
            "kind": "suite", "invocation": self.invocation, "suite": info.suite.name,
            "experiment": info.suite.experiment, "model": info.model_identity,
            "environment": info.environment, "trials": len(info.trials),
            "skipped": len(info.skipped), "time": time.time()})

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None:
        append_line(self.path, {
            "kind": "suite_values", "invocation": self.invocation,
            "values": {k: finite_or_none(v) for k, v in values.items()},
            "params": params, "time": time.time()})

    def trial_ended(self, record: TrialRecord) -> None:
        append_line(self.path, record.to_json())

    def trial_interrupted(self, trial: Trial, reason: str) -> None:
        append_line(self.path, {"kind": "interrupted", "invocation": self.invocation,
                                "name": trial.name, "config_hash": trial.config_hash,
                                "reason": reason, "time": time.time()})

    def suite_ended(self, records: list[TrialRecord], status: str, wall_s: float) -> None:
        append_line(self.path, {"kind": "suite_end", "invocation": self.invocation,
                                "status": status, "time": time.time(), "wall_s": wall_s})
