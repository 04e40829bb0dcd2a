"""The JSON Schema of a suite file, with the installed plugins' names filled in.

`harness schema` prints it, so that an editor (VS Code with Even Better TOML, taplo,
JetBrains) completes and checks suite files as they are typed:

    #:schema ./suite.schema.json          (first line of a suite file, for taplo)

It is generated from the same pydantic model that validates suites
(`harness.bench.configuration.suite_schema.SuiteFile`), then given what only the installed plugins
know: the model names and each model's options, the sampler names and each sampler's
hyperparameters (types, defaults, ranges, choices; a value or a non-empty list of
values), the time schedules (a name, a table with its name and parameters, or a list of
these), the metric names and the options a metric declares. Rules between fields
(either `steps` or `nfe`; every sampler has a budget when the suite has none) are
expressed too. What a schema cannot say (constraints between one sampler's
hyperparameters, the cap on a trial's NFE) is still checked by `harness run`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ...plugin.manager import LoadedPlugins
from .suite_schema import SuiteFile

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Either key present, for "either 'steps' or 'nfe'".
_HAS_BUDGET = {"anyOf": [{"required": ["steps"]}, {"required": ["nfe"]}]}
_ONE_BUDGET = {"not": {"required": ["steps", "nfe"]}}


def suite_json_schema(plugins: LoadedPlugins) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a suite file for these plugins."""
    schema = _without_nulls(SuiteFile.model_json_schema())
    entry = schema.pop("$defs")["SamplerFile"]
    schema = {"$schema": DIALECT, **schema, "title": "harness benchmark suite",
              "description": "A suite for `harness run`: the model, the samplers with their "
                             "hyperparameter grids and budgets, seeds, sizes and metrics."}
    props = schema["properties"]
    props["model"]["enum"] = plugins.models.names()
    props["samplers"] = {
        **_meta(props["samplers"]), "type": "object", "minProperties": 1,
        "properties": {name: _sampler_schema(entry, plugins.samplers.get(name))
                       for name in plugins.samplers.names()},
        "additionalProperties": False}
    props["schedule"] = {**_meta(props["schedule"]), "default": "karras",
                         **_schedules_schema(plugins)}
    props["metrics"] = {
        **_meta(props["metrics"]), "type": "object",
        "properties": {name: _metric_schema(plugins.metrics.get(name))
                       for name in plugins.metrics.names()},
        "additionalProperties": False}
    schema["allOf"] = [
        _ONE_BUDGET,
        # Without suite-wide budgets, every sampler brings its own.
        {"if": {"not": _HAS_BUDGET},
         "then": {"properties": {"samplers": {"additionalProperties": _HAS_BUDGET,
                                              "patternProperties": {"": _HAS_BUDGET}}}}},
        *(_model_options_rule(name, plugins.models.get(name))
          for name in plugins.models.names()),
    ]
    return schema


def _meta(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: prop[k] for k in ("title", "description") if k in prop}


def _sampler_schema(entry: dict[str, Any], sampler: Any) -> dict[str, Any]:
    """`[samplers.NAME]`: the generic entry with this sampler's `params`."""
    out = copy.deepcopy(entry)
    out["allOf"] = [_ONE_BUDGET]
    summary = (sampler.summary + " " if sampler.summary else "") + sampler.citation
    out["description"] = summary.strip() or out.get("description", "")
    params = sampler.params.json_schema()
    if "$defs" in params:
        # Nested types would need their definitions merged; accept any table instead
        # (`harness run` still checks every value).
        out["properties"]["params"] = {"type": "object"}
        return out
    out["properties"]["params"] = {
        "type": "object", "description": "hyperparameters: a value, or a list of values "
        "to try", "additionalProperties": False,
        "properties": {name: _value_or_grid(prop)
                       for name, prop in params.get("properties", {}).items()}}
    return out


def _value_or_grid(prop: dict[str, Any]) -> dict[str, Any]:
    """One hyperparameter: its own schema, or a non-empty list of such values."""
    meta = {k: prop[k] for k in ("description", "default") if k in prop}
    value = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
    return {**meta, "anyOf": [value, {"type": "array", "items": value, "minItems": 1}]}


def _schedules_schema(plugins: LoadedPlugins) -> dict[str, Any]:
    """`schedule`: a name, a table {name = NAME, PARAM = value...}, or a list of these."""
    names = plugins.schedules.names()
    one = [{"type": "string", "enum": names},
           *(_schedule_table(name, plugins.schedules.get(name)) for name in names)]
    return {"anyOf": [*one, {"type": "array", "minItems": 1, "items": {"anyOf": one}}]}


def _schedule_table(name: str, schedule: Any) -> dict[str, Any]:
    """One schedule with its parameters (every one optional: each has a default)."""
    params = schedule.params.json_schema().get("properties", {})
    properties = {"name": {"const": name}}
    properties.update({key: {k: v for k, v in prop.items() if k != "title"}
                       for key, prop in params.items()})
    summary = f"{schedule.summary} {schedule.citation}".strip()
    return {"type": "object", "description": summary, "properties": properties,
            "required": ["name"], "additionalProperties": False}


def _metric_schema(metric: Any) -> dict[str, Any]:
    """`[metrics.NAME]`: the options a metric declares in `DEFAULTS`, if it does."""
    out: dict[str, Any] = {"type": "object"}
    description = (getattr(metric, "__doc__", None) or "").strip().splitlines()
    if description:
        out["description"] = description[0]
    known = getattr(metric, "DEFAULTS", None)
    if isinstance(known, dict):
        out["properties"] = {key: _default_only(value) for key, value in known.items()}
        out["additionalProperties"] = False
    return out


def _default_only(value: Any) -> dict[str, Any]:
    """An option known by its default only: any type, the default shown when JSON can."""
    jsonable = (isinstance(value, (str, bool, int)) or
                (isinstance(value, float) and math.isfinite(value)))
    return {"default": value} if jsonable else {}


def _model_options_rule(name: str, spec: Any) -> dict[str, Any]:
    """With `model = NAME`, `model_options` holds only the options that model declares."""
    options = {key: {"description": str(text)} for key, text in spec.options.items()}
    return {"if": {"properties": {"model": {"const": name}}, "required": ["model"]},
            "then": {"properties": {"model_options": {
                "type": "object", "properties": options, "additionalProperties": False}}}}


def _without_nulls(node: Any) -> Any:
    """TOML has no null: `Optional` fields lose their null branch and null default."""
    if isinstance(node, list):
        return [_without_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_nulls(v) for k, v in node.items()}
    if "anyOf" in out:
        branches = [b for b in out["anyOf"] if b != {"type": "null"}]
        if len(branches) == 1:
            del out["anyOf"]
            out = {**branches[0], **out}
        else:
            out["anyOf"] = branches
    if "default" in out and out["default"] is None:
        del out["default"]
    return out
