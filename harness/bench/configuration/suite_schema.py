"""What a suite file may say, validated by pydantic, and the `Suite` it becomes.

Validation has two stages, both before anything is loaded or allocated:

1. `SuiteFile` (pydantic, strict) checks the structure: known keys, types, ranges and the
   caps below, fixed choices (dtypes, device). Every problem names its field as the
   file spells it (`samplers.heun.steps[1] must be an integer >= 1, got 0`).
2. `build_suite` checks the names against the installed plugins: the model and its
   options, the samplers and each point of their hyperparameter grids (through the
   sampler's own `Params`), the time schedules and their parameters, the metrics and
   the options they declare. Unknown names get a did-you-mean and the list of what
   exists (`harness.errors.unknown_name`). What needs the model's process (a given
   sigma list inside its range) is checked when the trials are resolved, still before
   any sampling (`harness.bench.configuration.trials`).

The JSON Schema of the same rules, with the installed plugins' names filled in, is
`harness.bench.configuration.suite_jsonschema`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, Field, ValidationError,
                      WithJsonSchema, model_validator)

from ...core.time_grid import ChosenSchedule
from ...core.validation import STRICT, dotted, join, one_line
from ...errors import HarnessError, ParameterError, UnknownNameError, unknown_name
from ...metrics.metric import untrained_refusal
from ...models.precision import NETWORK_DTYPES as PRECISIONS, STATE_DTYPES
from ...plugin.adapted import why_not_adapted
from ...plugin.manager import LoadedPlugins

DEVICES = ("auto", "cpu", "cuda")
DTYPES = tuple(STATE_DTYPES)
NETWORK_DTYPES = ("native", *PRECISIONS)
#: How a trial's sampler loop runs (`harness.bench.running.capture`): eagerly, or compiled
#: whole per batch shape (CUDA graphs on a GPU).
CAPTURES = ("off", "compiled")

# Caps on sizes, so that a typo (1e12 samples, a billion steps) is refused with its
# reason instead of allocating for minutes or failing deep inside torch.
#: Every sample of a trial is held in memory at once (the metrics see them together).
MAX_NUM_SAMPLES = 10_000_000
#: Far beyond any sampler's useful step count (reference samplers use up to ~2000);
#: choosing steps for an NFE budget also searches up to the budget.
MAX_STEPS = 100_000
#: Network evaluations per sample of one trial, whatever the hyperparameters multiply.
MAX_NFE = 1_000_000
#: A seed must fit a signed 64-bit integer, as generator keys and int64 tensors hold it.
MAX_SEED = 2**63 - 1
#: More torch threads than this is no setting but a typo.
MAX_THREADS = 1024
#: Trials of one suite (grid points x budgets x seeds), counted before the grid is expanded.
MAX_TRIALS = 100_000
#: A week: a longer trial limit is no limit but a typo.
MAX_TRIAL_TIME_LIMIT_S = 7 * 24 * 3600.0


class SuiteError(HarnessError):
    """A suite file or override that cannot be used; says which field and why."""


# --- field types -------------------------------------------------------------------

def _listed(value: Any) -> Any:
    """A single value where a list is allowed is the list of that value."""
    return value if isinstance(value, list) else [value]


def _distinct_sorted(values: list[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


def _distinct(values: list[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def _one_of(choices: tuple[str, ...], hint: Optional[Mapping[str, str]] = None,
            kind: Optional[str] = None) -> Any:
    """A string among `choices`; `hint` maps a common mistake to a sentence about it; a
    `kind` of name (a registry's, like "schedule") gets a did-you-mean."""
    def check(value: str) -> str:
        if value in choices:
            return value
        if kind is not None:
            raise ValueError(str(unknown_name(kind, value, choices)))
        extra = f" {hint[value]}" if hint and value in hint else ""
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}{extra}")
    return Annotated[str, AfterValidator(check),
                     WithJsonSchema({"type": "string", "enum": list(choices)})]


def _schedule_form(value: Any) -> Any:
    """A schedule's name, a table with its `name` and parameters, or a non-empty list of
    these (the names and parameters are checked against the plugins by `build_suite`)."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, (str, dict)) for item in items):
        raise ValueError(f"must be a schedule's name, a table {{name = \"...\", ...}} or "
                         f"a non-empty list of them, got {value!r}")
    return value


#: The JSON Schema of `schedule` without the installed names (`suite_jsonschema` adds them).
SCHEDULE_FORMS = {"anyOf": [{"type": "string"}, {"type": "object"},
                            {"type": "array", "minItems": 1,
                             "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}]}
Schedules = Annotated[Any, AfterValidator(_schedule_form), WithJsonSchema(SCHEDULE_FORMS)]


def _counts_schema(maximum: int) -> dict[str, Any]:
    item = {"type": "integer", "minimum": 1, "maximum": maximum}
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def _counts(maximum: int) -> Any:
    """Step counts or NFE budgets: one integer or a list, kept sorted without repeats."""
    item = Annotated[int, Field(ge=1, le=maximum)]
    return Annotated[list[item], Field(min_length=1), BeforeValidator(_listed),
                     AfterValidator(_distinct_sorted), WithJsonSchema(_counts_schema(maximum))]


def _not_empty(samplers: dict[str, Any]) -> dict[str, Any]:
    if not samplers:
        raise ValueError("must name at least one sampler")
    return samplers


def _some_values(value: Any) -> Any:
    if value == []:
        raise ValueError("must not be an empty list (give at least one value)")
    return value


#: The largest guidance scale accepted: far beyond any useful one (typical: 1 - 10).
MAX_GUIDANCE = 1000.0
GuidanceScale = Annotated[float, Field(ge=0.0, le=MAX_GUIDANCE)]
Guidance = Annotated[list[GuidanceScale], Field(min_length=1), BeforeValidator(_listed),
                     AfterValidator(_distinct_sorted),
                     WithJsonSchema({"anyOf": [
                         {"type": "number", "minimum": 0, "maximum": MAX_GUIDANCE},
                         {"type": "array", "minItems": 1, "items": {
                             "type": "number", "minimum": 0, "maximum": MAX_GUIDANCE}}]})]


def _labels(value: Any) -> Any:
    if isinstance(value, list) and not value:
        raise ValueError("must not be an empty list (give classes, or \"balanced\")")
    return value


Labels = Annotated[Union[Literal["balanced"], list[Annotated[int, Field(ge=0)]]],
                   AfterValidator(_labels)]

#: A hyperparameter's value, or a list of values to try (checked by the sampler's Params).
ParamValues = Annotated[Any, AfterValidator(_some_values)]
Steps = _counts(MAX_STEPS)
Budgets = _counts(MAX_NFE)
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Seeds = Annotated[list[Seed], Field(min_length=1), BeforeValidator(_listed),
                  AfterValidator(_distinct),
                  WithJsonSchema({"anyOf": [
                      {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                      {"type": "array", "minItems": 1,
                       "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED}}]})]
DTYPE_HINTS = {name: (f"(the sampler's state); for the network's precision use "
                      f"network_dtype = \"{low}\" (--network-dtype {low})")
               for name, low in (("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
                                 ("float16", "fp16"))}


def _device(value: str) -> str:
    if value not in DEVICES and not re.fullmatch(r"cuda:\d+", value):
        raise ValueError(f"must be one of {', '.join(DEVICES)} or cuda:N, got {value!r}")
    return value


Device = Annotated[str, AfterValidator(_device),
                   WithJsonSchema({"type": "string",
                                   "pattern": r"^(auto|cpu|cuda|cuda:[0-9]+)$"})]


# --- the file ----------------------------------------------------------------------

class _Table(BaseModel):
    """A TOML table: unknown keys are refused with a did-you-mean."""

    model_config = STRICT
    #: Appended to the unknown-key message, to say where such a key belongs instead.
    KEY_HINT: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(f"{unknown_name('key', key, cls.model_fields)}"
                                     f"{cls.KEY_HINT}")
        return data


class SamplerFile(_Table):
    """`[samplers.NAME]`: hyperparameter values (a list is a grid) and step budgets."""

    KEY_HINT: ClassVar[str] = " (hyperparameters go in the sampler's [params] table)"

    params: dict[str, ParamValues] = Field(
        default_factory=dict, description="hyperparameter -> value, or a list of values "
        "to try (lists of several parameters expand to their Cartesian product)")
    steps: Optional[Steps] = Field(None, description="step counts for this sampler")
    nfe: Optional[Budgets] = Field(None, description="NFE budgets for this sampler: each "
                                   "picks the step count whose NFE per sample is closest")
    guidance: Optional[Guidance] = Field(None, description="guidance scales for this "
                                         "sampler (default: the suite's)")

    @model_validator(mode="after")
    def _one_budget(self) -> "SamplerFile":
        if self.steps is not None and self.nfe is not None:
            raise ValueError("give either 'steps' or 'nfe', not both")
        return self


class SuiteFile(_Table):
    """A suite file's top level."""

    experiment: Optional[str] = Field(None, description="MLflow experiment (default: the "
                                      "suite's name)")
    description: str = Field("", description="one line on what the suite compares")
    model: str = Field(description="a registered model (`harness plugins`)")
    model_options: dict[str, Any] = Field(default_factory=dict,
                                          description="options the model declares")
    samplers: Annotated[dict[str, SamplerFile], AfterValidator(_not_empty)] = Field(
        description="the samplers to run: [samplers.NAME] tables",
        json_schema_extra={"minProperties": 1})
    schedule: Schedules = Field(
        "karras", description="the time grid of every sampler: a schedule's name, a table "
        "{name = \"karras\", rho = 5.0} with its parameters, or a list of these (one "
        "trial per schedule)")
    rank_across_schedules: bool = Field(
        False, description="rank rows of different schedules against each other (★ and "
        "≈); default: each schedule apart")
    steps: Optional[Steps] = Field(None, description="step counts for every sampler")
    nfe: Optional[Budgets] = Field(None, description="NFE budgets for every sampler")
    guidance: Optional[Guidance] = Field(
        None, description="classifier-free guidance scales w (a conditional model only): "
        "one trial per scale; 1 is purely conditional, 0 unconditional; none: the model's "
        "own unconditional denoiser, unguided")
    labels: Labels = Field("balanced", description="each sample's class under guidance: "
                           "\"balanced\" (classes dealt out in shuffled blocks, from "
                           "(seed, i)) or a list of classes dealt out in turn")
    seeds: Seeds = Field(default_factory=lambda: [0], description="one trial per seed; "
                         "sample i depends only on (seed, i)")
    num_samples: Annotated[int, Field(ge=1, le=MAX_NUM_SAMPLES)] = Field(
        description="samples per trial")
    batch_size: Annotated[int, Field(ge=1, le=MAX_NUM_SAMPLES)] = Field(
        1000, description="samples per batch and process (memory, not results)")
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                               description="metric name -> its options")
    device: Device = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    dtype: _one_of(DTYPES, DTYPE_HINTS) = Field(  # type: ignore[valid-type]
        "float32", description="the sampler's state")
    network_dtype: _one_of(NETWORK_DTYPES) = Field(  # type: ignore[valid-type]
        "native", description="the network's precision (autocast); native: as loaded")
    compile: bool = Field(False, description="run the network through torch.compile")
    capture: _one_of(CAPTURES) = Field(  # type: ignore[valid-type]
        "off", description="compiled: each sampler call compiled whole per batch shape "
        "(CUDA graphs on a GPU), checked against the eager call at warm-up; a sampler "
        "that cannot be captured runs eagerly, saying why")
    stream: bool = Field(False, description="streamed trials: each batch goes through the "
                         "decoder and the metrics' feature extractors as it is drawn, and "
                         "only the samples the grid and the metrics read are held (memory "
                         "O(batch + features), not O(num_samples)); the same numbers, so "
                         "not part of a trial's configuration")
    threads: Optional[Annotated[int, Field(ge=1, le=MAX_THREADS)]] = Field(
        None, description="torch threads per process (default: $OMP_NUM_THREADS, else 1); "
                          "not part of a trial's configuration")
    tracking_uri: str = Field("", description="MLflow tracking URI (default: "
                              "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    trial_time_limit: Optional[Annotated[float, Field(
        gt=0, le=MAX_TRIAL_TIME_LIMIT_S, allow_inf_nan=False)]] = Field(
        None, description="seconds a trial's sampling and metrics may take; past them it "
                          "is FAILED (TrialTimeout) and the suite goes on (default: no "
                          "limit); not part of a trial's configuration")

    @model_validator(mode="after")
    def _budgets(self) -> "SuiteFile":
        if self.steps is not None and self.nfe is not None:
            raise ValueError("give either 'steps' or 'nfe' budgets, not both")
        if self.steps is None and self.nfe is None:
            for name, entry in self.samplers.items():
                if entry.steps is None and entry.nfe is None:
                    raise ValueError(f"samplers.{name}: no step budget; set 'steps' or "
                                     f"'nfe' for the suite or for this sampler")
        return self


# --- the validated suite -----------------------------------------------------------

@dataclass(frozen=True)
class SamplerEntry:
    """One sampler of a suite: its hyperparameter grid and its step budgets."""

    name: str
    #: Parameter name -> the values to try (a single value is a one-element list).
    grid: dict[str, list[Any]]
    steps: Optional[tuple[int, ...]] = None
    nfe: Optional[tuple[int, ...]] = None
    #: Guidance scales, each a trial of its own; None: unguided.
    guidance: Optional[tuple[float, ...]] = None

    def combinations(self) -> list[dict[str, Any]]:
        """The Cartesian product of the grid, in the order the values were given."""
        keys = list(self.grid)
        return [dict(zip(keys, values))
                for values in itertools.product(*(self.grid[k] for k in keys))]

    def varied(self) -> list[str]:
        """Parameters that take more than one value (they appear in trial names)."""
        return [k for k, values in self.grid.items() if len(values) > 1]


@dataclass(frozen=True)
class Suite:
    """A validated suite. `to_dict` is the resolved configuration, printed and logged."""

    name: str
    source: str
    experiment: str
    description: str
    model: str
    model_options: dict[str, Any]
    samplers: tuple[SamplerEntry, ...]
    #: The time schedules, each with its parameters: one trial per schedule.
    schedules: tuple[ChosenSchedule, ...]
    #: Whether ★ and ≈ compare rows of different schedules (default: each apart).
    rank_across_schedules: bool
    steps: Optional[tuple[int, ...]]
    nfe: Optional[tuple[int, ...]]
    seeds: tuple[int, ...]
    num_samples: int
    batch_size: int
    metrics: dict[str, dict[str, Any]]
    #: "balanced" or the classes dealt out in turn (`harness.core.labels`).
    labels: Any
    device: str
    dtype: str
    network_dtype: str
    compile: bool
    #: torch threads per process: how fast, never what; no part of any config hash.
    threads: int
    tracking_uri: str
    #: Seconds a trial may take (`harness.bench.running.time_limit`); like threads, no part of
    #: any config hash: it decides whether a result comes, not what it is.
    trial_time_limit: Optional[float] = None
    #: "off" or "compiled": how the sampler loop runs (`harness.bench.running.capture`).
    capture: str = "off"
    #: Streamed trials (`harness.bench.running.stream`): where the samples are held, never
    #: what is measured (features bit-identical to a held trial's), so, like threads, no
    #: part of any config hash.
    stream: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, schedules=()))
        labels = [s.label for s in self.schedules]
        # One schedule is its label, as suites were logged before there could be several.
        out["schedules"] = labels[0] if len(labels) == 1 else labels
        out = {("schedule" if k == "schedules" else k): v for k, v in out.items()}
        out["samplers"] = {s.name: {"params": s.grid, "steps": s.steps, "nfe": s.nfe,
                                    "guidance": s.guidance}
                           for s in self.samplers}
        return out


def default_threads() -> int:
    """$OMP_NUM_THREADS when it is a positive integer (torch reads it too), else 1: one
    thread degrades gracefully when other processes compete for the cores
    (`benchmarks/thread_count.py`)."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_THREADS else 1


def build_suite(raw: Mapping[str, Any], plugins: LoadedPlugins, name: str = "suite",
                source: str = "<memory>") -> Suite:
    """Validate a raw suite against the registered plugins; raises naming the field."""
    where = f"suite {source}"
    try:
        file = SuiteFile.model_validate(dict(raw))
    except ValidationError as err:
        raise SuiteError(f"{where}: {one_line(err)}") from None

    refuse = _Refusal(where)

    spec = _lookup(refuse, "model", plugins.models, file.model)
    for key in file.model_options:
        if key not in spec.options:
            kind = f"option of model {file.model!r}"
            raise refuse("model_options", unknown_name(kind, key, spec.options))
    for metric_name, options in file.metrics.items():
        metric = _lookup(refuse, "metrics", plugins.metrics, metric_name)
        # Metrics that declare their options (a DEFAULTS table) get them checked now.
        known = getattr(metric, "DEFAULTS", None)
        for key in options if isinstance(known, Mapping) else ():
            if key not in known:
                kind = f"option of metric {metric_name!r}"
                raise refuse(f"metrics.{metric_name}", unknown_name(kind, key, known))
    _check_guidance(refuse, file, spec, plugins)
    if not spec.trained:
        _check_trained(refuse, file.model, file.metrics, plugins)
    schedules = _schedules(refuse, plugins, file.schedule)
    trials = len(file.seeds) * len(schedules) * sum(
        math.prod(len(_listed(v)) for v in entry.params.values())
        * len(entry.steps or entry.nfe or file.steps or file.nfe or ())
        * len(entry.guidance or file.guidance or [None])
        for entry in file.samplers.values())
    if trials > MAX_TRIALS:
        raise refuse("samplers", f"the grids, budgets and seeds make {trials:,} trials, above "
                     f"the cap of {MAX_TRIALS:,}")
    samplers = tuple(_sampler_entry(refuse, plugins, sampler_name, entry, file)
                     for sampler_name, entry in file.samplers.items())
    return Suite(
        name=name, source=source, experiment=file.experiment or name,
        description=file.description, model=file.model,
        model_options=dict(file.model_options), samplers=samplers, schedules=schedules,
        rank_across_schedules=file.rank_across_schedules,
        steps=file.steps, nfe=file.nfe, seeds=file.seeds, num_samples=file.num_samples,
        batch_size=file.batch_size, metrics={k: dict(v) for k, v in file.metrics.items()},
        labels=file.labels if isinstance(file.labels, str) else tuple(file.labels),
        device=file.device, dtype=file.dtype, network_dtype=file.network_dtype,
        compile=file.compile,
        threads=file.threads if file.threads is not None else default_threads(),
        tracking_uri=file.tracking_uri, trial_time_limit=file.trial_time_limit,
        capture=file.capture, stream=file.stream)


def _sampler_entry(refuse: Any, plugins: LoadedPlugins, name: str, entry: SamplerFile,
                   file: SuiteFile) -> SamplerEntry:
    """One sampler's entry, every point of its grid checked by the sampler's `Params`,
    and its costliest run's NFE per sample checked against the cap."""
    sampler = _lookup(refuse, "samplers", plugins.samplers, name, plugins)
    field = f"samplers.{name}.params"
    validator = sampler.params.validator()
    grid = {key: list(_listed(values)) for key, values in entry.params.items()}
    # Each value on its own first, so that the error points at it (`S_churn[1]`) ...
    for key, values in grid.items():
        if key not in validator.model_fields:
            # An adapted sampler's Params know why a library argument cannot be set.
            why = {**getattr(sampler.params, "taken", {}),
                   **getattr(sampler.params, "unsupported", {})}.get(key)
            raise refuse(field, _unknown_parameter(key, validator.model_fields)
                         if why is None else _not_settable(sampler, key))
        for index, value in enumerate(values):
            at = f"{field}.{key}" + (f"[{index}]" if isinstance(entry.params[key], list)
                                     else "")
            try:
                validator.model_validate({key: value})
            except ValidationError as err:
                raise SuiteError(f"{refuse.where}: {one_line(err, lambda loc: at)}"
                                 ) from None
    own = entry.steps is not None or entry.nfe is not None
    scales = entry.guidance or file.guidance
    result = SamplerEntry(name, grid, entry.steps if own else file.steps,
                          entry.nfe if own else file.nfe,
                          tuple(scales) if scales is not None else None)
    # ... then every combination, for the constraints between parameters.
    for combination in result.combinations():
        try:
            params = sampler.make_params(combination)
        except ParameterError as err:
            raise refuse(field, err) from None
        # The most steps asked for; for NFE budgets (capped themselves) the step count is
        # chosen near the budget, so there only a single step's cost needs checking.
        steps = max(result.steps) if result.steps is not None else 1
        cost = sampler.expected_nfe(steps, params)
        if cost > MAX_NFE:
            which = f" with {combination}" if combination else ""
            raise refuse(f"samplers.{name}", f"{steps} step(s) of {name}{which} cost "
                         f"{cost:,} network evaluations per sample, above the cap of "
                         f"{MAX_NFE:,}")
    return result


def _schedules(refuse: Any, plugins: LoadedPlugins, given: Any
               ) -> tuple[ChosenSchedule, ...]:
    """Each listed schedule, looked up and its parameters checked by its `Params`; a
    schedule listed twice (the same name and parameters) is refused."""
    listed = isinstance(given, list)
    chosen: list[ChosenSchedule] = []
    for index, item in enumerate(given if listed else [given]):
        field = f"schedule[{index}]" if listed else "schedule"
        values = dict(item) if isinstance(item, dict) else {"name": item}
        name = values.pop("name", None)
        if not isinstance(name, str):
            raise refuse(field, f"a table needs name = \"...\", one of "
                         f"{', '.join(plugins.schedules.names())}; got {item!r}")
        schedule = _lookup(refuse, field, plugins.schedules, name)
        validator = schedule.params.validator()
        for key, value in values.items():
            if key not in validator.model_fields:
                raise refuse(field, _unknown_parameter(
                    key, validator.model_fields, f"schedule {name!r} has no parameters"))
            try:
                validator.model_validate({key: tuple(value) if isinstance(value, list)
                                          else value})
            except ValidationError as err:
                raise SuiteError(f"{refuse.where}: "
                                 f"{one_line(err, lambda loc: f'{field}.{dotted(loc)}')}"
                                 ) from None
        try:  # the constraints between values (a given sigma list descends)
            params = schedule.params(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in values.items()})
        except ParameterError as err:
            raise refuse(field, err) from None
        one = ChosenSchedule(schedule, params)
        if any(other.label == one.label for other in chosen):
            raise refuse(field, f"{one.short_label!r} is listed twice")
        chosen.append(one)
    return tuple(chosen)


def _check_guidance(refuse: Any, file: SuiteFile, spec: Any, plugins: LoadedPlugins
                    ) -> None:
    """Guidance and labels need a conditional model (its spec says, before loading)."""
    guided = [f"samplers.{name}.guidance" for name, entry in file.samplers.items()
              if entry.guidance is not None]
    if file.guidance is not None:
        guided.insert(0, "guidance")
    classes = getattr(spec, "num_classes", 0)
    if classes is None:  # known once loaded: `check_conditional` then
        return
    if guided and not classes:
        conditional = [name for name, entry in plugins.models.entries()
                       if getattr(entry.item, "num_classes", 0)]
        have = (f"; conditional models: {', '.join(conditional)}" if conditional
                else "; no conditional model is installed")
        raise refuse(guided[0], f"model {file.model!r} is not class-conditional, so it "
                     f"cannot be guided{have}")
    if not isinstance(file.labels, str):
        if not guided:
            raise refuse("labels", "labels are used only under guidance: set 'guidance'")
        wrong = [c for c in file.labels if c >= classes]
        if wrong:
            raise refuse("labels", f"model {file.model!r} has classes 0 .. {classes - 1}, "
                         f"got {wrong[0]}")


def check_conditional(suite: Suite, num_classes: int) -> None:
    """After loading: a guided suite's model has classes, and the given labels are among
    them (for models whose spec could not say before loading)."""
    guided = any(entry.guidance for entry in suite.samplers)
    if guided and not num_classes:
        raise SuiteError(f"suite {suite.source}: guidance: model {suite.model!r} (as loaded, "
                         f"with {suite.model_options}) is not class-conditional, so it "
                         f"cannot be guided")
    if guided and not isinstance(suite.labels, str):
        wrong = [c for c in suite.labels if c >= num_classes]
        if wrong:
            raise SuiteError(f"suite {suite.source}: labels: model {suite.model!r} has "
                             f"classes 0 .. {num_classes - 1}, got {wrong[0]}")


def check_trained(suite: Suite, plugins: LoadedPlugins, trained: bool) -> None:
    """After loading: no metric that needs a trained network on a model whose loaded
    weights are untrained (for a spec that did not say so before loading)."""
    if not trained:
        _check_trained(_Refusal(f"suite {suite.source}"), suite.model, suite.metrics,
                       plugins)


def _check_trained(refuse: Any, model: str, metrics: Mapping[str, Any],
                   plugins: LoadedPlugins) -> None:
    """A benchmark-only model (untrained weights) is refused every metric of quality."""
    why = untrained_refusal(model, (plugins.metrics.get(name) for name in metrics),
                            (entry.item for _, entry in plugins.metrics.entries()))
    if why is not None:
        raise refuse("metrics", why)


def _unknown_parameter(key: str, known: Mapping[str, Any],
                       none: str = "this sampler has no hyperparameters") -> Any:
    if not known:
        return f"unknown parameter {key!r}: {none}"
    return unknown_name("parameter", key, known)


def _not_settable(sampler: Any, key: str) -> str:
    """The Params' own reason why `key` cannot be set (set by the harness, or a type a
    suite file cannot write)."""
    try:
        sampler.params.from_mapping({key: None})
    except ParameterError as err:
        return str(err)
    return f"parameter {key!r} cannot be set"


class _Refusal:
    """Makes the `SuiteError` of one suite: `suite FILE: FIELD must be ...`."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, field: str, message: Any) -> SuiteError:
        return SuiteError(f"{self.where}: {join(field, str(message))}")


def _lookup(refuse: Any, field: str, registry: Any, name: str,
            plugins: Optional[LoadedPlugins] = None) -> Any:
    try:
        return registry.get(name)
    except UnknownNameError as err:
        why = why_not_adapted(plugins, name) if plugins is not None else None
        raise refuse(field, why or err) from None
