"""Benchmark suites: TOML files that say what to run, resolved into a flat list of trials.

A suite names the model, the samplers with hyperparameter grids, the step budgets, the
sample counts, metrics with their options, seeds and the device. Command-line overrides
are applied to the parsed TOML *before* validation, so a value from either source is
checked the same way. Everything is validated before any compute: unknown names and
keys are refused with suggestions, every sampler's parameters go through
`Sampler.make_params`, and the error names the field that is wrong.

    experiment = "digits"
    model = "digits"
    schedule = "karras"
    nfe = [10, 20, 35, 50, 100]     # budgets; or `steps = [...]`
    seeds = [0, 1]
    num_samples = 500

    [samplers.heun]                 # steps chosen so that the counted NFE ~ each budget
    [samplers.langevin.params]
    S_churn = [0.0, 10.0]           # lists expand to a Cartesian product

    [metrics.nll]
    test_points = 64

A trial is one (sampler, hyperparameters, steps, seed). Its configuration hash is the
sha256 of the canonical JSON of everything that determines its result, the versions of
the harness and of the plugins that provide its sampler, model and metrics included
(`harness.bench.code_identity`), which is what `--resume` matches on.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

from ..errors import HarnessError, ParameterError, UnknownNameError, unknown_name
from ..plugin.manager import LoadedPlugins
from ..core.schedules import SCHEDULES
from ..models.precision import NETWORK_DTYPES as PRECISIONS, STATE_DTYPES
from .code_identity import code_versions

SUITES_DIR = Path(__file__).resolve().parent / "suites"
DEFAULT_SUITE = "default"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = tuple(STATE_DTYPES)
NETWORK_DTYPES = ("native", *PRECISIONS)

#: Every key a suite may have at the top level, with its default (None: required).
TOP_LEVEL_DEFAULTS: dict[str, Any] = {
    "experiment": None, "description": "", "model": None, "model_options": {},
    "samplers": None, "schedule": "karras", "steps": None, "nfe": None, "seeds": [0],
    "num_samples": None, "batch_size": 1000, "metrics": {}, "device": "auto",
    "dtype": "float32", "network_dtype": "native", "compile": False, "tracking_uri": "",
}
SAMPLER_KEYS = ("params", "steps", "nfe")


class SuiteError(HarnessError):
    """A suite file or override that cannot be used; says which field and why."""


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler of a suite: its hyperparameter grid and its step budgets."""

    name: str
    #: Parameter name -> the values to try (a single value is a one-element list).
    grid: dict[str, list[Any]]
    steps: Optional[tuple[int, ...]] = None
    nfe: Optional[tuple[int, ...]] = None

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
    schedule: str
    steps: Optional[tuple[int, ...]]
    nfe: Optional[tuple[int, ...]]
    seeds: tuple[int, ...]
    num_samples: int
    batch_size: int
    metrics: dict[str, dict[str, Any]]
    device: str
    dtype: str
    network_dtype: str
    compile: bool
    tracking_uri: str

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["samplers"] = {s.name: {"params": s.grid, "steps": s.steps, "nfe": s.nfe}
                           for s in self.samplers}
        return out


@dataclass(frozen=True)
class Trial:
    """One run of one sampler: everything needed to reproduce it, and its hash."""

    name: str
    sampler: str
    params: dict[str, Any]          # every hyperparameter, defaults included
    varied: dict[str, Any]          # the grid values that distinguish it from siblings
    steps: int
    nfe: int                        # expected NFE per sample from the capabilities
    seed: int
    config: dict[str, Any]
    config_hash: str


# --- loading and overriding ------------------------------------------------------------

def suite_path(name_or_path: Optional[str]) -> Path:
    """A packaged suite by name (`default`, `smoke`) or a path to a TOML file."""
    if name_or_path is None:
        name_or_path = DEFAULT_SUITE
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError(f"suite file {str(path)!r} does not exist")
        return path
    packaged = {p.stem: p for p in SUITES_DIR.glob("*.toml")}
    if name_or_path not in packaged:
        raise SuiteError(str(unknown_name("suite", name_or_path, packaged)))
    return packaged[name_or_path]


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a syntax error names the file, line and column."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"malformed suite file {str(path)!r}: {err}") from None
    except UnicodeDecodeError as err:
        raise SuiteError(f"suite file {str(path)!r} is not UTF-8 text (byte "
                         f"{err.object[err.start:err.start + 1]!r} at offset {err.start}); "
                         f"save it as UTF-8") from None


def parse_value(text: str) -> Any:
    """A command-line value read as TOML (numbers, booleans, [lists]); else a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_list(option: str, text: str, kind: type = str) -> list[Any]:
    """`a,b,c` as a list; with kind=int every item must be an integer."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise SuiteError(f"{option}: expected a comma-separated list, got {text!r}")
    if kind is int:
        try:
            return [int(item) for item in items]
        except ValueError:
            raise SuiteError(f"{option}: expected integers, got {text!r}") from None
    return items


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw suite with command-line overrides applied.

    Keys: `samplers` (list of names: keep these, adding missing ones with defaults),
    `metrics` (list of names, likewise), `steps` / `nfe` (lists: replace every
    sampler's budgets), `model` (a different model drops the suite's model options),
    any other top-level key (replaced), and `set` (a list of "dotted.key=value").
    """
    out = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        if value is None or key == "set":
            continue
        if key in ("samplers", "metrics"):
            current = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = {name: current.get(name, {}) for name in value}
        elif key in ("steps", "nfe"):
            out.pop("steps", None)
            out.pop("nfe", None)
            out[key] = list(value)
            for entry in (out.get("samplers") or {}).values():
                if isinstance(entry, dict):
                    entry.pop("steps", None)
                    entry.pop("nfe", None)
        elif key == "model":
            if value != out.get("model"):
                out["model_options"] = {}
            out["model"] = value
        else:
            out[key] = value
    for assignment in overrides.get("set") or ():
        _set_dotted(out, assignment)
    return out


def _set_dotted(target: dict[str, Any], assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise SuiteError(f"--set expects key=value (dotted keys for tables), "
                         f"got {assignment!r}")
    parts = key.strip().split(".")
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SuiteError(f"--set {key}: {part!r} is not a table")
        node = child
    node[parts[-1]] = parse_value(text.strip())


# --- validation ------------------------------------------------------------------------

def build_suite(raw: Mapping[str, Any], plugins: LoadedPlugins, name: str = "suite",
                source: str = "<memory>") -> Suite:
    """Validate a raw suite against the registered plugins; raises naming the field."""
    where = f"suite {source}"
    for key in raw:
        if key not in TOP_LEVEL_DEFAULTS:
            raise SuiteError(f"{where}: {unknown_name('key', key, TOP_LEVEL_DEFAULTS)}")
    values = {k: raw.get(k, default) for k, default in TOP_LEVEL_DEFAULTS.items()}
    for key in ("model", "samplers", "num_samples"):
        if values[key] is None:
            raise SuiteError(f"{where}: {key!r} is required")

    model = _string(where, "model", values["model"])
    spec = _lookup(where, "model", plugins.models, model)
    model_options = _table(where, "model_options", values["model_options"])
    for key in model_options:
        if key not in spec.options:
            raise SuiteError(f"{where}: model_options: "
                             f"{unknown_name(f'option of model {model!r}', key, spec.options)}")
    schedule = _string(where, "schedule", values["schedule"])
    if schedule not in SCHEDULES:
        raise SuiteError(f"{where}: schedule: {unknown_name('schedule', schedule, SCHEDULES)}")
    metrics = _table(where, "metrics", values["metrics"])
    for metric_name, options in metrics.items():
        metric = _lookup(where, "metrics", plugins.metrics, metric_name)
        _table(where, f"metrics.{metric_name}", options)
        # Metrics that declare their options (a DEFAULTS table) get them checked now.
        known = getattr(metric, "DEFAULTS", None)
        for key in options if isinstance(known, Mapping) else ():
            if key not in known:
                kind = f"option of metric {metric_name!r}"
                raise SuiteError(f"{where}: metrics.{metric_name}: "
                                 f"{unknown_name(kind, key, known)}")
    device = _string(where, "device", values["device"])
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        raise SuiteError(f"{where}: device must be one of {', '.join(DEVICES)} or cuda:N, "
                         f"got {device!r}")
    dtype = _string(where, "dtype", values["dtype"])
    if dtype not in DTYPES:
        low = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}
        hint = (f" (the sampler's state); for the network's precision use "
                f"network_dtype = \"{low[dtype]}\" (--network-dtype {low[dtype]})"
                if dtype in low else "")
        raise SuiteError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got "
                         f"{dtype!r}{hint}")
    network_dtype = _string(where, "network_dtype", values["network_dtype"])
    if network_dtype not in NETWORK_DTYPES:
        raise SuiteError(f"{where}: network_dtype must be one of "
                         f"{', '.join(NETWORK_DTYPES)}, got {network_dtype!r}")
    if not isinstance(values["compile"], bool):
        raise SuiteError(f"{where}: compile must be true or false, got {values['compile']!r}")

    steps = _counts(where, "steps", values["steps"])
    nfe = _counts(where, "nfe", values["nfe"])
    if steps is not None and nfe is not None:
        raise SuiteError(f"{where}: give either 'steps' or 'nfe' budgets, not both")
    samplers = _samplers(where, values["samplers"], plugins, steps, nfe)
    return Suite(
        name=name, source=source,
        experiment=_string(where, "experiment", values["experiment"] or name),
        description=_string(where, "description", values["description"]),
        model=model, model_options=model_options, samplers=samplers, schedule=schedule,
        steps=steps, nfe=nfe, seeds=_seeds(where, values["seeds"]),
        num_samples=_positive(where, "num_samples", values["num_samples"]),
        batch_size=_positive(where, "batch_size", values["batch_size"]),
        metrics={k: dict(v) for k, v in metrics.items()}, device=device, dtype=dtype,
        network_dtype=network_dtype, compile=values["compile"],
        tracking_uri=_string(where, "tracking_uri", values["tracking_uri"]))


def _samplers(where: str, raw: Any, plugins: LoadedPlugins,
              steps: Optional[tuple[int, ...]], nfe: Optional[tuple[int, ...]]
              ) -> tuple[SamplerEntry, ...]:
    table = _table(where, "samplers", raw)
    if not table:
        raise SuiteError(f"{where}: 'samplers' must name at least one sampler")
    entries = []
    for name, body in table.items():
        field = f"samplers.{name}"
        sampler = _lookup(where, "samplers", plugins.samplers, name)
        body = _table(where, field, body)
        for key in body:
            if key not in SAMPLER_KEYS:
                raise SuiteError(f"{where}: {field}: {unknown_name('key', key, SAMPLER_KEYS)}"
                                 f" (hyperparameters go in [{field}.params])")
        grid = {k: (list(v) if isinstance(v, list) else [v])
                for k, v in _table(where, f"{field}.params", body.get("params", {})).items()}
        for key, options in grid.items():
            if not options:
                raise SuiteError(f"{where}: {field}.params.{key}: empty list of values")
        own_steps = _counts(where, f"{field}.steps", body.get("steps"))
        own_nfe = _counts(where, f"{field}.nfe", body.get("nfe"))
        if own_steps is not None and own_nfe is not None:
            raise SuiteError(f"{where}: {field}: give either 'steps' or 'nfe', not both")
        if own_steps is None and own_nfe is None:
            own_steps, own_nfe = steps, nfe
        if own_steps is None and own_nfe is None:
            raise SuiteError(f"{where}: {field}: no step budget; set 'steps' or 'nfe' "
                             f"for the suite or for this sampler")
        entry = SamplerEntry(name, grid, own_steps, own_nfe)
        for combination in entry.combinations():
            try:
                sampler.make_params(combination)
            except ParameterError as err:
                raise SuiteError(f"{where}: {field}.params: {err}") from None
        entries.append(entry)
    return tuple(entries)


def _lookup(where: str, field: str, registry: Any, name: Any) -> Any:
    if not isinstance(name, str):
        raise SuiteError(f"{where}: {field}: names must be strings, got {name!r}")
    try:
        return registry.get(name)
    except UnknownNameError as err:
        raise SuiteError(f"{where}: {field}: {err}") from None


def _string(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SuiteError(f"{where}: {field} must be a string, got {value!r}")
    return value


def _table(where: str, field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: {field} must be a table, got {value!r}")
    return value


def _positive(where: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{where}: {field} must be an integer >= 1, got {value!r}")
    return value


def _counts(where: str, field: str, value: Any) -> Optional[tuple[int, ...]]:
    """A list of integers >= 1, sorted and without duplicates (None stays None)."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SuiteError(f"{where}: {field} must not be empty")
    for item in values:
        _positive(where, field, item)
    return tuple(sorted(set(values)))


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SuiteError(f"{where}: seeds must not be empty")
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SuiteError(f"{where}: seeds must be integers >= 0, got {seed!r}")
    return tuple(dict.fromkeys(values))


def load_suite(name_or_path: Optional[str], plugins: LoadedPlugins,
               overrides: Optional[Mapping[str, Any]] = None) -> Suite:
    """Read, override and validate a suite (packaged name or TOML path)."""
    path = suite_path(name_or_path)
    raw = apply_overrides(read_toml(path), overrides or {})
    return build_suite(raw, plugins, name=path.stem, source=str(path))


# --- resolution into trials ------------------------------------------------------------

def steps_for_budget(sampler: Any, params: Any, budget: int) -> int:
    """The number of steps whose counted NFE per sample is closest to `budget`.

    Ties go to fewer steps, so a sampler is never given more than its budget when an
    equally close smaller run exists (e.g. Heun: 2N - 1 NFE; a budget of 10 gives N = 5).
    """
    best, best_gap = 1, None
    for steps in range(1, budget + 2):
        gap = abs(sampler.expected_nfe(steps, params) - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = steps, gap
    return best


def canonical_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def trial_name(sampler: str, varied: Mapping[str, Any], nfe: int, seed: int) -> str:
    """Readable and unique within a suite, e.g. `langevin-S_churn=10-35nfe-seed0`."""
    parts = [sampler] + [f"{k}={short_value(v)}" for k, v in varied.items()]
    return "-".join(parts + [f"{nfe}nfe", f"seed{seed}"])


def short_value(value: Any) -> str:
    """A parameter value as it appears in trial names (floats without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_trials(suite: Suite, plugins: LoadedPlugins,
                   model_identity: Mapping[str, Any]) -> list[Trial]:
    """Every (sampler, hyperparameters, steps, seed) of the suite, with its config hash.

    `model_identity` says which model exactly (name, options, weight hash, SDE); it is
    part of every hash, so new weights never match old results on --resume.
    """
    trials: list[Trial] = []
    for entry in suite.samplers:
        sampler = plugins.samplers.get(entry.name)
        code = code_versions(plugins, entry.name, suite.model, suite.metrics)
        for combination in entry.combinations():
            params = sampler.make_params(combination)
            if entry.steps is not None:
                step_list = list(entry.steps)
            else:
                step_list = sorted({steps_for_budget(sampler, params, b) for b in entry.nfe})
            varied = {k: combination[k] for k in entry.varied()}
            for steps in step_list:
                nfe = sampler.expected_nfe(steps, params)
                for seed in suite.seeds:
                    config = {
                        "model": dict(model_identity), "sampler": entry.name,
                        "params": params.to_dict(), "schedule": suite.schedule,
                        "steps": steps, "seed": seed, "num_samples": suite.num_samples,
                        "metrics": suite.metrics, "dtype": suite.dtype,
                        **network_config(suite), "code": code,
                    }
                    trials.append(Trial(
                        name=trial_name(entry.name, varied, nfe, seed), sampler=entry.name,
                        params=params.to_dict(), varied=varied, steps=steps, nfe=nfe,
                        seed=seed, config=config, config_hash=canonical_hash(config)))
    names = [t.name for t in trials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"suite {suite.source}: trials with the same name "
                         f"{', '.join(duplicates)}; give distinct step budgets")
    return trials


def network_config(suite: Suite) -> dict[str, Any]:
    """How the network runs, for the config hash: empty for the defaults, so that trials
    recorded before these options existed keep their hashes (and --resume finds them)."""
    config: dict[str, Any] = {}
    if suite.network_dtype != "native":
        config["network_dtype"] = suite.network_dtype
    if suite.compile:
        config["compile"] = True
    return config


def weights_hash(model: Any) -> str:
    """The model's weight identity: its verified file hash, else a hash of its tensors."""
    known = getattr(model, "sha256", None)
    if isinstance(known, str) and known:
        return known
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_identity(suite: Suite, model: Any) -> dict[str, Any]:
    """What exactly the model is: name, options, weights and forward process."""
    return {"name": suite.model, "options": dict(suite.model_options),
            "weights_sha256": weights_hash(model), "sde": model.sde.params()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys (`samplers.heun.nfe`); empty tables stay as leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
