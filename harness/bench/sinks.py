"""Where results go: a tiny sink interface, and the local JSONL sink that never loses a trial.

The runner measures; sinks record. The runner calls, in order,

    suite_started(info)                       once, before any trial
    suite_values(values, params)              once-per-suite measurements (reference NLL)
    trial_started(trial)                      before a trial computes anything
    trial_ended(result)                       FINISHED or FAILED, with metrics or error
    trial_interrupted(trial, reason)          Ctrl-C / SIGTERM inside a trial
    suite_ended(results, status, wall_s)      FINISHED, FAILED (some trial) or KILLED;
                                              the suite's wall-clock, as the runner measured it

and the command, once it has written the report (tables, plots) from what was recorded,

    report_written(files, series)             the report's files, and each metric's mean
                                              per sampler as (key, value, NFE) points

`Sinks` fans every call out and isolates the sinks from each other: one that raises is
reported and dropped, so a tracking server going away mid-suite never stops the suite
nor the other sinks. `LocalSink` appends every trial to `trials.jsonl` as it ends
(flushed and fsynced per line, and cut back if the disk fills mid-line, so the file never
ends torn), which is the copy of record when MLflow is unreachable and what `--resume`
reads besides MLflow (`finished_hashes`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from .atomic import append_complete
from .suite import Suite, Trial

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

    @property
    def all_trials(self) -> list[Trial]:
        return self.skipped + self.trials


@dataclass
class TrialResult:
    """What one trial produced: its metrics, or the error that stopped it."""

    trial: Trial
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    #: Conventions learnt while measuring (metric estimators, memory kind): MLflow params.
    params: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    #: The formatted traceback of a failure, for whoever has to fix it.
    traceback: Optional[str] = None
    #: What a reader must know about a finished trial, one line each: its numbers (the
    #: counted NFE differs from what the sampler declares) or what went wrong after the
    #: measurement (an artefact not written); the trial stays FINISHED.
    warnings: list[str] = field(default_factory=list)
    #: Those of the warnings that say something was not recorded (an artefact not
    #: written): they make the run's exit status 3.
    unrecorded: list[str] = field(default_factory=list)
    #: Bootstrap replicates of set metrics, by metric key (`harness.metrics.bootstrap`):
    #: what the report needs for intervals over seeds and paired comparisons.
    replicates: dict[str, list[float]] = field(default_factory=dict)
    #: The least value each replicated metric can take (0 for FID), where there is one.
    minimums: dict[str, float] = field(default_factory=dict)
    #: Replicated metrics whose larger values are better (precision, accuracy): True.
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    #: Files made from the trial's samples (e.g. "samples.png"), for sinks to keep.
    artifacts: dict[str, Path] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def record(self) -> dict[str, Any]:
        """One JSON line: enough to rebuild the results table without MLflow."""
        t = self.trial
        return {"kind": "trial", "floor": t.kind == "floor",
                "name": t.name, "config_hash": t.config_hash,
                "status": self.status, "sampler": t.sampler, "variant": variant(t),
                "guidance": t.guidance,
                "params": t.params, "steps": t.steps, "nfe_expected": t.nfe,
                "seed": t.seed, "num_samples": t.config["num_samples"],
                "metrics": {k: _finite_or_none(v) for k, v in self.metrics.items()},
                "measured_params": self.params,
                "error": self.error, "traceback": self.traceback,
                "warnings": list(self.warnings),
                "replicates": {k: [_finite_or_none(v) for v in values]
                               for k, values in self.replicates.items()},
                "replicate_minimums": dict(self.minimums),
                "replicate_higher_is_better": dict(self.higher_is_better),
                "started": self.started, "ended": self.ended,
                "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "config": t.config}


def variant(trial: Trial) -> str:
    """The grid values that set a trial apart from its siblings, e.g. `S_churn=10`, and
    its guidance scale (`w=4`)."""
    values = dict(trial.varied)
    if trial.guidance is not None:
        values["w"] = float(trial.guidance)
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


def _finite_or_none(value: float) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


class Sink(Protocol):
    """How results are recorded. Every method may be a no-op."""

    def suite_started(self, info: SuiteInfo) -> None: ...

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None: ...

    def trial_started(self, trial: Trial) -> None: ...

    def trial_ended(self, result: TrialResult) -> None: ...

    def trial_interrupted(self, trial: Trial, reason: str) -> None: ...

    def suite_ended(self, results: list[TrialResult], status: str, wall_s: float
                    ) -> None: ...

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None: ...


class Sinks:
    """Fans calls out to several sinks; a sink that raises is warned about and dropped."""

    def __init__(self, sinks: list[Any]):
        self.active = list(sinks)
        self.dropped: list[tuple[Any, str]] = []

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.active):
            try:
                getattr(sink, method)(*args)
            except Exception as err:  # a recorder failing must not stop the measurements
                message = f"{type(err).__name__}: {err}"
                print(f"warning: {type(sink).__name__} stopped recording after an error in "
                      f"{method}: {message}; results continue in the other sinks",
                      file=sys.stderr)
                self.active.remove(sink)
                self.dropped.append((sink, message))

    def suite_started(self, info: SuiteInfo) -> None:
        self._each("suite_started", info)

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None:
        self._each("suite_values", values, params)

    def trial_started(self, trial: Trial) -> None:
        self._each("trial_started", trial)

    def trial_ended(self, result: TrialResult) -> None:
        self._each("trial_ended", result)

    def trial_interrupted(self, trial: Trial, reason: str) -> None:
        self._each("trial_interrupted", trial, reason)

    def suite_ended(self, results: list[TrialResult], status: str, wall_s: float) -> None:
        self._each("suite_ended", results, status, wall_s)

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None:
        self._each("report_written", files, series)


def strict_json(value: Any) -> Any:
    """Plain JSON: non-finite floats (e.g. S_tmax = inf) become the strings "inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


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
    """Appends suite and trial records to `<directory>/trials.jsonl` as they happen."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "trials.jsonl"
        self.invocation = ""

    def suite_started(self, info: SuiteInfo) -> None:
        self.invocation = time.strftime("%Y%m%dT%H%M%S")
        append_line(self.path, {
            "kind": "suite", "invocation": self.invocation, "suite": info.suite.name,
            "experiment": info.suite.experiment, "model": info.model_identity,
            "environment": info.environment, "trials": len(info.trials),
            "skipped": len(info.skipped), "time": time.time()})

    def suite_values(self, values: dict[str, float], params: dict[str, Any]) -> None:
        append_line(self.path, {
            "kind": "suite_values", "invocation": self.invocation,
            "values": {k: _finite_or_none(v) for k, v in values.items()},
            "params": params, "time": time.time()})

    def trial_started(self, trial: Trial) -> None:
        """Nothing: only ended trials are worth a line."""

    def trial_ended(self, result: TrialResult) -> None:
        append_line(self.path, {**result.record(), "invocation": self.invocation})

    def trial_interrupted(self, trial: Trial, reason: str) -> None:
        append_line(self.path, {"kind": "interrupted", "invocation": self.invocation,
                                "name": trial.name, "config_hash": trial.config_hash,
                                "reason": reason, "time": time.time()})

    def suite_ended(self, results: list[TrialResult], status: str, wall_s: float) -> None:
        append_line(self.path, {"kind": "suite_end", "invocation": self.invocation,
                                "status": status, "time": time.time(), "wall_s": wall_s})

    def report_written(self, files: dict[str, Path],
                       series: list[tuple[str, float, int]]) -> None:
        """Nothing: the report is written into this sink's own folder."""
