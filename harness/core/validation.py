"""Pydantic's validation errors as one line that names the field and what is allowed.

Suites and sampler hyperparameters are validated by pydantic (strict: no silent coercion
of "3" to 3 or 1 to True, unknown keys refused). Its own messages ("Input should be
greater than or equal to 1") name neither the value nor the field the way a suite file
spells it, so each error is rewritten here: `samplers.langevin.params.S_churn[1] must be
>= 0.0, got -1.0`. The caller decides how a location is spelled (a suite's dotted path,
or "parameter 'snr'") and what prefix the line gets.

Importing this module imports pydantic (about 0.1 s): modules that validate import it
when they first validate, so that `harness --help` does not pay for it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from pydantic import ConfigDict, ValidationError

#: Strict: TOML already gives typed values, so a wrong type is a mistake to report, not
#: to coerce. Unknown keys are refused (and get a did-you-mean where the caller checks
#: keys itself first).
STRICT = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True,
                    validate_default=False)

#: How many problems one line lists before saying how many more there are.
SHOWN = 3

Loc = Sequence[Any]


def dotted(loc: Loc) -> str:
    """A location as a suite spells it: `samplers.heun.steps[1]`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def describe(error: dict[str, Any]) -> str:
    """What is wrong with the value, without its location: `must be >= 0.0, got -1.0`."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    bounds = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
              "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}
    if kind in bounds:
        key, symbol = bounds[kind]
        bound = ctx[key]
        # An integer bound comes from an integer field (pydantic makes float bounds float).
        what = "an integer " if isinstance(bound, int) and not isinstance(bound, bool) else ""
        return f"must be {what}{symbol} {bound}, got {got!r}"
    expected = {
        "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
        "float_type": "a number", "float_parsing": "a number",
        "bool_type": "true or false", "bool_parsing": "true or false",
        "string_type": "a string", "dict_type": "a table", "model_type": "a table",
        "dataclass_type": "a table", "list_type": "a list", "tuple_type": "a list",
        "finite_number": "a finite number",
    }
    if kind in expected:
        return f"must be {expected[kind]}, got {got!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {got!r}"
    if kind == "extra_forbidden":
        return "is not a known key"
    message = str(error.get("msg", kind))
    return message[:1].lower() + message[1:]


def join(field: str, message: str) -> str:
    """`field must be ...` for a predicate, `field: message` for anything else."""
    if not field:
        return message
    if message.startswith(("must ", "is ")):
        return f"{field} {message}"
    return f"{field}: {message}"


def one_line(err: ValidationError, where: Callable[[Loc], str] = dotted) -> str:
    """Every problem of a validation, on one line: `where(loc) message; ...` (`join`)."""
    problems = []
    for error in err.errors(include_url=False):
        field, message = where(tuple(error["loc"])), describe(error)
        if error["type"] == "missing":
            field = repr(field)
        problems.append(join(field, message))
    # One field failing several ways (a union's branches) reads as one problem.
    problems = list(dict.fromkeys(problems))
    shown = "; ".join(problems[:SHOWN])
    more = len(problems) - SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")
