"""Suite files: finding them, reading their TOML, and applying command-line overrides.

Overrides are applied to the parsed TOML *before* validation
(`harness.bench.configuration.suite_schema.build_suite`), so a value from either source is checked
the same way and an error names the same field.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

from ...errors import unknown_name
from ...plugin.manager import LoadedPlugins
from .suite_schema import Suite, SuiteError, build_suite

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
DEFAULT_SUITE = "default"


def suite_path(name_or_path: Optional[str]) -> Path:
    """A packaged suite by name (`default`, `smoke`) or a path to a TOML file."""
    if name_or_path is None:
        name_or_path = DEFAULT_SUITE
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError(f"suite file {str(path)!r} does not exist")
        return path
    packaged = packaged_suites()
    if name_or_path not in packaged:
        raise SuiteError(str(unknown_name("suite", name_or_path, packaged)))
    return packaged[name_or_path]


def packaged_suites() -> dict[str, Path]:
    """The suites shipped with the harness, by name."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


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
    if kind in (int, float):
        try:
            return [kind(item) for item in items]
        except ValueError:
            what = "integers" if kind is int else "numbers"
            raise SuiteError(f"{option}: expected {what}, got {text!r}") from None
    return items


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw suite with command-line overrides applied.

    Keys: `samplers` (list of names: keep these, adding missing ones with defaults),
    `metrics` (list of names, likewise), `steps` / `nfe` (lists: replace every
    sampler's budgets), `guidance` (list: replaces every sampler's scales), `model` (a
    different model drops the suite's model options),
    any other top-level key (replaced), and `set` (a list of "dotted.key=value").
    """
    out = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        if value is None or key == "set":
            continue
        if key in ("samplers", "metrics"):
            current = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = {name: current.get(name, {}) for name in value}
        elif key == "guidance":  # replaces every sampler's scales too
            out[key] = list(value)
            for entry in (out.get("samplers") or {}).values():
                if isinstance(entry, dict):
                    entry.pop("guidance", None)
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


def load_suite(name_or_path: Optional[str], plugins: LoadedPlugins,
               overrides: Optional[Mapping[str, Any]] = None) -> Suite:
    """Read, override and validate a suite (packaged name or TOML path). An error that
    the overrides brought in names the override as typed, not the suite file."""
    path = suite_path(name_or_path)
    raw = read_toml(path)
    overrides = overrides or {}
    try:
        return build_suite(apply_overrides(raw, overrides), plugins, name=path.stem,
                           source=str(path))
    except SuiteError as err:
        if not _typed_overrides(overrides):
            raise
        try:  # the file alone: if it fails the same way, the file is at fault
            build_suite(raw, plugins, name=path.stem, source=str(path))
        except SuiteError as alone:
            if str(alone) == str(err):
                raise
        raise _blame_overrides(err, str(path), overrides) from None


def recorded_in(name_or_path: str) -> tuple[str, str]:
    """The MLflow experiment and tracking URI ("" if the suite sets none) that `harness
    run NAME_OR_PATH` records into: the suite's `experiment`, else its name. A word that
    names no suite is taken as an experiment name itself (one made with `--experiment`)."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists() or name_or_path in packaged_suites()):
        return name_or_path, ""
    found = suite_path(name_or_path)
    raw = read_toml(found)
    experiment, uri = raw.get("experiment"), raw.get("tracking_uri")
    return (experiment if isinstance(experiment, str) and experiment else found.stem,
            uri if isinstance(uri, str) else "")


def _typed_overrides(overrides: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(the option as the user typed it, the dotted suite field it sets), per override."""
    typed = []
    for key, value in overrides.items():
        if key == "set" or value is None:
            continue
        option = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            text = option if value else f"--no-{option[2:]}"
        elif isinstance(value, (list, tuple)):
            text = f"{option} {','.join(_typed(v) for v in value)}"
        else:
            text = f"{option} {_typed(value)}"
        typed.append((text, key))
    for assignment in overrides.get("set") or ():
        typed.append((f"--set {assignment}", assignment.partition("=")[0].strip()))
    return typed


def _typed(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


#: The field a validation message starts with: `metrics.fid.num_samples must ...`,
#: `samplers.langevin.params.S_churn[1] must ...`, `'samplers' is required`, `model: ...`.
_LEADING_FIELD = re.compile(r"'?([\w.\-]+(?:\[\d+\])*)'?[ :]")


def _blame_overrides(err: SuiteError, source: str, overrides: Mapping[str, Any]
                     ) -> SuiteError:
    """`err` restated as the command-line override's: the one that sets its field (the
    most specific), else all of them, instead of the suite file."""
    message = str(err)
    prefix = f"suite {source}: "
    problem = message[len(prefix):] if message.startswith(prefix) else message
    typed = _typed_overrides(overrides)
    match = _LEADING_FIELD.match(problem)
    field = re.sub(r"\[\d+\]", "", match.group(1)) if match else ""
    # The override that sets the field, or a table the field is in, or a key inside it.
    covering = [(text, key) for text, key in typed
                if field and (field == key or field.startswith(key + ".")
                              or key.startswith(field + "."))]
    # A message about a key, not a field ("unknown key 'frob'"): the override of that key.
    covering = covering or [(text, key) for text, key in typed
                            if f"'{key.rsplit('.', 1)[-1]}'" in problem]
    if covering:
        text = max(covering, key=lambda pair: len(pair[1]))[0]
        return SuiteError(f"{text}: {problem}")
    return SuiteError(f"suite {source} with {' '.join(t for t, _ in typed)}: {problem}")
