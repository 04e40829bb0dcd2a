"""A `Params` class from the keyword arguments of another library's function or class.

Adapting a third-party sampler (a diffusers scheduler's constructor, a k-diffusion
`sample_*` function) means offering its own keyword arguments as the sampler's
hyperparameters, checked like every built-in's before any compute: `foreign_params`
declares one field per keyword argument a suite may set, typed from its annotation or,
where the library annotates nothing, from its default. Three kinds of argument are not
offered:

* those the harness sets itself (the model, the grid, the noise source, the training
  schedule that must match the model's process): `taken`, each with the reason;
* those whose values cannot be written in a suite file (arrays, callables, generators):
  left out, and named with their type;
* ``*args`` and ``**kwargs``.

Setting one of the first two kinds is refused with its reason, not as an unknown name;
an unknown name is refused with the list of the valid ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Callable, Literal, Optional, Union

from ..errors import ParameterError, unknown_name
from .sampler import Params, param

#: Types a suite file can write (TOML) and pydantic checks strictly.
_SCALARS = (bool, int, float, str)


def foreign_params(class_name: str, signature: Union[inspect.Signature, Callable], *,
                   taken: Mapping[str, str] = {}, docs: Mapping[str, str] = {},
                   defaults: Mapping[str, Any] = {}) -> type[Params]:
    """A frozen `Params` subclass named `class_name` with one field per keyword argument
    of `signature` (or of a callable's: its postponed annotations are then resolved)
    that a suite can set.

    `taken`: argument -> why the harness sets it (refused when a suite sets it);
    `docs`: argument -> its one-line meaning; `defaults`: argument -> the default the
    harness uses in place of the library's (e.g. where the library's default cannot
    serve the harness's models). Arguments without a default are taken to be
    positional inputs (the model, the state) and must be in `taken`.
    """
    if not isinstance(signature, inspect.Signature):
        signature = _signature(signature)
    fields: list[tuple[str, Any, Any]] = []
    unsupported: dict[str, str] = {}
    for name, argument in signature.parameters.items():
        if name in ("self", "cls") or argument.kind in (argument.VAR_POSITIONAL,
                                                        argument.VAR_KEYWORD):
            continue
        if name in taken:
            continue
        if argument.default is inspect.Parameter.empty and name not in defaults:
            raise ParameterError(f"{class_name}: argument {name!r} has no default and is "
                                 f"not set by the adapter (taken)")
        default = defaults.get(name, argument.default)
        annotation = _settable_type(argument.annotation, default)
        if annotation is None:
            unsupported[name] = _type_text(argument.annotation, default)
            continue
        fields.append((name, annotation, param(default, doc=docs.get(name, ""))))
    cls = dataclasses.make_dataclass(class_name, fields, bases=(ForeignParams,),
                                     frozen=True, namespace={
                                         "taken": dict(taken), "unsupported": unsupported,
                                         "__doc__": f"The keyword arguments of "
                                                    f"{class_name} a suite may set."})
    cls.validator()  # the declarations are checkable, or the adapter fails to register
    return cls


@dataclasses.dataclass(frozen=True)
class ForeignParams(Params):
    """Params of an adapted function: says why an argument cannot be set."""

    #: argument -> why the harness sets it itself.
    taken: typing.ClassVar[dict[str, str]] = {}
    #: argument -> its type, which a suite file cannot write.
    unsupported: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Params:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key in cls.taken:
                raise ParameterError(f"parameter {key!r} is set by the harness: "
                                     f"{cls.taken[key]}")
            if key in cls.unsupported:
                raise ParameterError(f"parameter {key!r} ({cls.unsupported[key]}) cannot "
                                     f"be set from a suite; settable: "
                                     f"{', '.join(sorted(known)) or '(none)'}")
            if key not in known:
                raise ParameterError(str(unknown_name("parameter", key, known)))
        return cls(**values)

    def changed(self) -> dict[str, Any]:
        """The arguments whose values differ from the defaults: what to pass on."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not _same(getattr(self, f.name), f.default)}


def _signature(fn: Callable) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, AttributeError, TypeError, SyntaxError):
        return inspect.signature(fn)  # an annotation only a type checker can resolve


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _settable_type(annotation: Any, default: Any) -> Optional[Any]:
    """The annotation if a suite can write its values, else one inferred from the
    default; None when neither can be checked."""
    if annotation is not inspect.Parameter.empty:
        if isinstance(annotation, str):
            return None  # postponed annotations of another module: not resolvable here
        if not _writable(annotation):
            return None
        if _admits(annotation, default):
            return annotation
        # A library annotating `float` with a default of None means "float or unset".
        return Optional[annotation] if default is None else None
    if default is None:
        return None  # no type to check against: an object the library fills in itself
    if type(default) in _SCALARS:
        return type(default)
    if isinstance(default, (list, tuple)) and all(type(v) in _SCALARS for v in default):
        return type(default)
    return None


def _writable(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation in _SCALARS or annotation is type(None):
        return True
    if origin is Literal:
        return all(type(v) in _SCALARS for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return all(_writable(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return all(a is Ellipsis or _writable(a) for a in typing.get_args(annotation))
    return False


def _admits(annotation: Any, default: Any) -> bool:
    """Whether the default is a value of the annotation (libraries annotate `float` and
    default to `None`, or `int` and default to `1.0`)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(annotation).validate_python(default, strict=False)
    except ValidationError:
        return False
    return True


def _type_text(annotation: Any, default: Any) -> str:
    if annotation is not inspect.Parameter.empty:
        return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"default {default!r}"
