"""A trial's outcome: what the runner measures into (`TrialResult`), and the one record of
it that every sink receives and every reader parses back (`TrialRecord`).

`TrialRecord` has one serialiser and one parser per place it is kept:

    to_json() / from_json(line)            a line of `trials.jsonl` (plain JSON)
    mlflow_params(), mlflow_metrics(),     a trial run in MLflow
    mlflow_tags() / from_mlflow_run(run)

A line of `trials.jsonl` holds the whole record, and parses back to an equal one. Lines
written before a field existed parse with its default (`guidance` None,
`replicate_higher_is_better` empty); `schedule`, which older lines hold only inside
`config`, is read from there. A trial run in MLflow holds less: params are text (a
hyperparameter comes back through `ast.literal_eval`, so the string "10" would come back
as the number 10), the configuration only as the flat `model.*` and `metric.*` params,
and no traceback; see `from_mlflow_run` for what comes back empty.

Conventions: statuses are MLflow's (RUNNING, FINISHED, FAILED, KILLED); times are Unix
seconds; a non-finite metric or replicate is recorded as missing (None), in both places.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from ..configuration.canonical import flatten
from ..configuration.suite import Trial

#: A trial that has started and not ended (MLflow's name for it).
RUNNING = "RUNNING"
#: The sampler column of the real-data floor's records (`harness.bench.running.floor`).
FLOOR_NAME = "data"
#: The suffix of the measured params that say why a metric has no value (`nll_status`):
#: the only measured params MLflow's flat params tell apart from the suite's own.
STATUS_SUFFIX = "_status"


@dataclass
class TrialResult:
    """What one trial produced, filled in by the runner as it measures: its metrics, or
    the error that stopped it. Sinks receive it as a `TrialRecord`."""

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


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One trial as it is recorded; the fields in the order of a `trials.jsonl` line."""

    #: Every line of `trials.jsonl` says what it is; a trial's says "trial".
    KIND: ClassVar[str] = "trial"

    #: Held-out real data measured like a sampler (`harness.bench.running.floor`), not a sampler.
    floor: bool = False
    name: str
    config_hash: str
    status: str
    sampler: str
    #: The grid values that set the trial apart from its siblings (`S_churn=10,w=4`).
    variant: str = ""
    #: The classifier-free guidance scale w, or None for an unguided trial.
    guidance: Optional[float] = None
    #: Every hyperparameter of the sampler, defaults included.
    params: dict[str, Any] = field(default_factory=dict)
    #: The time schedule's label (`karras`, `karras(rho=5.0)`); "" for the floor.
    schedule: str = ""
    steps: Optional[int] = None
    #: The NFE per sample the sampler declares for these steps (the counted one is the
    #: metric `nfe`).
    nfe_expected: Optional[int] = None
    seed: Optional[int] = None
    num_samples: Optional[int] = None
    #: Every value measured, None where it was not finite.
    metrics: dict[str, Optional[float]] = field(default_factory=dict)
    #: Conventions learnt while measuring (estimators, `<metric>_status` reasons).
    measured_params: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    traceback: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    replicates: dict[str, list[Optional[float]]] = field(default_factory=dict)
    replicate_minimums: dict[str, float] = field(default_factory=dict)
    replicate_higher_is_better: dict[str, bool] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    #: Files made from the samples, name -> path.
    artifacts: dict[str, str] = field(default_factory=dict)
    #: Everything that determines the result, as hashed into `config_hash`.
    config: Optional[dict[str, Any]] = None
    #: Which invocation of the suite ran it (`SuiteInfo.invocation`).
    invocation: str = ""

    # --- from the runner -----------------------------------------------------------------
    @classmethod
    def planned(cls, trial: Trial, invocation: str = "") -> TrialRecord:
        """The record of a trial that has started: what it is, nothing measured yet."""
        return cls(floor=trial.kind == "floor", name=trial.name,
                   config_hash=trial.config_hash, status=RUNNING, sampler=trial.sampler,
                   variant=variant(trial), guidance=trial.guidance, params=trial.params,
                   schedule=_schedule_in(trial.config), steps=trial.steps,
                   nfe_expected=trial.nfe, seed=trial.seed,
                   num_samples=trial.config["num_samples"], config=trial.config,
                   invocation=invocation)

    @classmethod
    def from_result(cls, result: TrialResult, invocation: str = "") -> TrialRecord:
        """The record of an ended trial (FINISHED or FAILED)."""
        return dataclasses.replace(
            cls.planned(result.trial, invocation), status=result.status,
            metrics={k: finite_or_none(v) for k, v in result.metrics.items()},
            measured_params=dict(result.params), error=result.error,
            traceback=result.traceback, warnings=list(result.warnings),
            replicates={k: [finite_or_none(v) for v in values]
                        for k, values in result.replicates.items()},
            replicate_minimums=dict(result.minimums),
            replicate_higher_is_better=dict(result.higher_is_better),
            started=result.started, ended=result.ended,
            artifacts={k: str(v) for k, v in result.artifacts.items()})

    # --- trials.jsonl --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as one `trials.jsonl` line (plain JSON: `strict_json`)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return strict_json({"kind": self.KIND, **fields})

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> TrialRecord:
        """The record of a `trials.jsonl` trial line, of this version or an older one;
        keys it does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in line.items() if k in known}
        values.setdefault("schedule", _schedule_in(line.get("config")))
        return cls(**values)

    # --- MLflow --------------------------------------------------------------------------
    def mlflow_params(self) -> dict[str, Any]:
        """The trial run's params: what the trial is (its sampler and hyperparameters
        as `sampler.<name>`, model as `model.<key>`, metric options as `metric.<key>`),
        then what measuring learnt (`measured_params`, empty until it ended). MLflow keeps
        a param's first value: a sink logs the first part when the trial starts."""
        config = self.config or {}
        params: dict[str, Any] = {
            "sampler": self.sampler, "steps": self.steps, "nfe_expected": self.nfe_expected,
            "schedule": self.schedule, "seed": self.seed, "num_samples": self.num_samples}
        if "dtype" in config:
            params["dtype"] = config["dtype"]
        params["config_hash"] = self.config_hash
        params.update({f"sampler.{k}": v for k, v in self.params.items()})
        if self.guidance is not None:
            params["guidance"] = self.guidance
        model, metrics = config.get("model", {}), config.get("metrics", {})
        params.update({f"model.{k}": v for k, v in flatten(model).items()})
        params.update({f"metric.{k}": v for k, v in flatten(metrics).items()})
        params.update(self.measured_params)
        return params

    def mlflow_metrics(self) -> dict[str, float]:
        """The trial run's metrics: every finite value measured."""
        return {k: v for k, v in self.metrics.items() if v is not None}

    def mlflow_tags(self) -> dict[str, str]:
        """The trial run's tags: its kind, hash and variant (the floor marked), and once
        it ended its error and warnings (joined by "; ")."""
        tags = {"harness.kind": self.KIND, "config_hash": self.config_hash,
                "harness.variant": self.variant}
        if self.floor:
            tags["harness.floor"] = "true"
        if self.error:
            tags["error"] = self.error
        if self.warnings:
            tags["warnings"] = "; ".join(self.warnings)
        return tags

    @classmethod
    def from_mlflow_run(cls, run: Any, logged: Optional[Mapping[str, Any]] = None
                        ) -> TrialRecord:
        """The record of a trial run: a row of `mlflow.search_runs` or an
        `mlflow.entities.Run`. `logged` is the run's replicates artefact
        (`tracking.REPLICATES_ARTIFACT`), where it was read.

        MLflow cannot give back: the traceback, the configuration (`config` is None;
        `schedule`, the model and metric options are params), the artefacts' local paths,
        the invocation, and of the measured params only the `<metric>_status` reasons
        (the others are indistinguishable from the suite's own params). Missing values
        come back as None (numbers) or empty."""
        row = _columns(run)
        params = {k[len("params."):]: v for k, v in row.items()
                  if k.startswith("params.") and _text(v) is not None}
        logged = logged or {}
        return cls(
            floor=_text(row.get("tags.harness.floor")) == "true",
            name=_text(row.get("tags.mlflow.runName")) or "",
            config_hash=_text(row.get("tags.config_hash")) or "",
            status=_text(row.get("status")) or "",
            sampler=params.get("sampler", ""),
            variant=_text(row.get("tags.harness.variant")) or "",
            guidance=finite_number(params.get("guidance")),
            params={k[len("sampler."):]: _literal(v) for k, v in params.items()
                    if k.startswith("sampler.")},
            schedule=params.get("schedule", ""), steps=_integer(params.get("steps")),
            nfe_expected=_integer(params.get("nfe_expected")),
            seed=_integer(params.get("seed")),
            num_samples=_integer(params.get("num_samples")),
            metrics={k[len("metrics."):]: finite_number(v) for k, v in row.items()
                     if k.startswith("metrics.") and finite_number(v) is not None},
            measured_params={k: v for k, v in params.items() if k.endswith(STATUS_SUFFIX)},
            error=_text(row.get("tags.error")),
            warnings=[w for w in (_text(row.get("tags.warnings")) or "").split("; ") if w],
            replicates=logged.get("replicates", {}),
            replicate_minimums=logged.get("minimums", {}),
            replicate_higher_is_better=logged.get("higher_is_better", {}),
            started=_seconds(row.get("start_time")), ended=_seconds(row.get("end_time")))


def variant(trial: Trial) -> str:
    """The grid values that set a trial apart from its siblings, e.g. `S_churn=10`, and
    its guidance scale (`w=4`)."""
    values = dict(trial.varied)
    if trial.guidance is not None:
        values["w"] = float(trial.guidance)
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


def finite_or_none(value: float) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def strict_json(value: Any) -> Any:
    """Plain JSON: non-finite floats (e.g. S_tmax = inf) become the strings "inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _schedule_in(config: Optional[Mapping[str, Any]]) -> str:
    schedule = (config or {}).get("schedule")
    return schedule if isinstance(schedule, str) else ""


# --- reading MLflow's flat values -------------------------------------------------------

def _columns(run: Any) -> Mapping[str, Any]:
    """A run as the columns of `mlflow.search_runs` (`params.x`, `metrics.x`, `tags.x`,
    `status`, `start_time`, `end_time`): a row already is; a `Run` entity is turned into
    them (its times in milliseconds)."""
    if callable(getattr(run, "get", None)):  # a row (or a dict) of columns already
        return run
    info, data = run.info, run.data
    columns: dict[str, Any] = {"run_id": info.run_id, "status": info.status,
                               "start_time": info.start_time, "end_time": info.end_time}
    for kind in ("params", "metrics", "tags"):
        columns.update({f"{kind}.{k}": v for k, v in getattr(data, kind).items()})
    return columns


def _text(value: Any) -> Optional[str]:
    """A string cell; None for a missing one (pandas gives NaN)."""
    return value if isinstance(value, str) else None


def finite_number(value: Any) -> Optional[float]:
    """A cell as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _integer(value: Any) -> Optional[int]:
    number = finite_number(value)
    return None if number is None else int(number)


def _literal(text: str) -> Any:
    """A hyperparameter from its MLflow text (`str(value)`): the number, boolean or
    list it spells, else the text itself (a name, or "inf" as a JSON line holds it)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _seconds(value: Any) -> float:
    """A run's time as Unix seconds: a pandas/datetime timestamp, or milliseconds (a
    `Run` entity's); 0 when missing."""
    if hasattr(value, "timestamp"):
        try:
            return float(value.timestamp())
        except ValueError:  # pandas' NaT: the run has not ended
            return 0.0
    number = finite_number(value)
    return 0.0 if number is None else number / 1000.0
