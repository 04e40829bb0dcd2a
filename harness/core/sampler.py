"""The sampler contract: one call shape, validated hyperparameters, capabilities as data.

A sampler is a function

    fn(model, x, grid, noise, callback, params) -> samples

* `model`: a `ScoreModel` (`score`, `denoise`, `ode_drift`, `sde`); every call counts NFE;
* `x`: the initial state at t = grid.t[0], shape (B, *data.shape), in the SDE's variable;
* `grid`: a `TimeGrid` (plain floats: t, sigma, scale), t descending to 0;
* `noise`: `noise(x)` returns the next standard-normal draw of every sample's own stream;
* `callback`: None or a function called with a dict after each step
  (keys: ``i``, ``t``, ``x``; samplers may add more);
* `params`: an instance of the sampler's `Params` subclass, already validated.

It returns the final state. Samplers contain no timing, logging, I/O or device logic.

A sampler that does not step on the grid (an adapted library's scheduler choosing its
own timesteps) may give its function a method `levels(params, sde, steps)` returning
the noise levels of its network calls in a run of `steps` steps: `harness run
--dry-run` shows them in place of the grid, which would not be what the sampler sees.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Optional, Protocol, Union

from torch import Tensor

from ..errors import ParameterError, unknown_name

Callback = Optional[Callable[[dict], None]]


def param(default: Any, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None,
          choices: tuple | None = None, doc: str = "") -> Any:
    """Declare a hyperparameter with its default, allowed range or choices, and meaning."""
    limits = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "doc": doc}
    return field(default=default, metadata=limits)


@dataclass(frozen=True)
class Params:
    """Base of every sampler's hyperparameters: a frozen dataclass checked on creation.

    Declare fields with `param(default, ge=..., le=..., choices=..., doc=...)`; types come
    from the annotations (int, float, bool, str, or any type pydantic validates). Invalid
    values raise `ParameterError` naming the parameter and what is allowed, before any
    compute happens. The checks are a pydantic model generated from the declarations
    (`validator()`), strict: 1 is no boolean, 2.5 no integer, "3" no number; an integer
    given for a float becomes a float; NaN is refused everywhere.
    """

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in _validate(type(self), values).items():
            object.__setattr__(self, name, value)
        self.check()

    def check(self) -> None:
        """Constraints between parameters; raise `ParameterError` naming them."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Params":
        """Build from a mapping; unknown keys are refused with the known ones listed."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known and not known:
                raise ParameterError(f"unknown parameter {key!r}: this sampler has no "
                                     f"hyperparameters")
            if key not in known:
                raise ParameterError(str(unknown_name("parameter", key, known)))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def validator(cls) -> Any:
        """The pydantic model that checks one set of these parameters (generated once)."""
        return _validator(cls)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of these parameters: types, defaults, ranges, choices, docs.

        JSON has no infinity: a non-finite default is left out of `default` and named in
        the description instead (TOML writes it `inf`)."""
        schema = cls.validator().model_json_schema()
        for prop in schema.get("properties", {}).values():
            default = prop.get("default")
            if isinstance(default, float) and not math.isfinite(default):
                del prop["default"]
                note = f"default: {default}"
                prop["description"] = (f"{prop['description']} ({note})"
                                       if prop.get("description") else note)
        return schema

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Each parameter's name, type, default, limits and meaning (for listings)."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            limits = {k: v for k, v in f.metadata.items() if v is not None and k != "doc"}
            rows.append({"name": f.name, "type": getattr(hints.get(f.name), "__name__", "?"),
                         "default": f.default, **limits, "doc": f.metadata.get("doc", "")})
        return rows


def _validate(cls: type[Params], values: dict[str, Any]) -> dict[str, Any]:
    """The values checked and converted by `cls`'s generated model, or `ParameterError`."""
    from pydantic import ValidationError  # pydantic loads on first use: see validation.py

    from .validation import one_line

    try:
        checked = _validator(cls).model_validate(values)
    except ValidationError as err:
        raise ParameterError(one_line(err, where=_parameter_name)) from None
    return {name: getattr(checked, name) for name in values}


def _parameter_name(loc: Sequence[Any]) -> str:
    from .validation import dotted

    return f"parameter {dotted(loc)!r}" if loc else ""


@functools.cache
def _validator(cls: type[Params]) -> Any:
    """A strict pydantic model with one field per dataclass field: its annotation, its
    default, `param(...)`'s bounds as constraints, its choices as an enum."""
    from pydantic import AfterValidator, BeforeValidator, Field, create_model

    from .validation import STRICT

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if meta.get(k) is not None}
        extra = {}
        checks: list[Any] = [BeforeValidator(_not_nan)]
        if meta.get("choices") is not None:
            choices = tuple(meta["choices"])
            checks.append(AfterValidator(functools.partial(_one_of, choices)))
            extra["enum"] = list(choices)
        default = f.default if f.default is not dataclasses.MISSING else ...
        spec = Field(default, description=meta.get("doc") or None,
                     json_schema_extra=extra or None, **bounds)
        fields[f.name] = (Annotated[(hints.get(f.name, Any), *checks)], spec)
    try:
        return create_model(cls.__name__, __config__=STRICT, **fields)
    except Exception as err:  # pydantic refuses e.g. `ge` on a str field
        raise ParameterError(f"{cls.__name__}: its declarations cannot be checked "
                             f"({type(err).__name__}: {err})") from None


def _not_nan(value: Any) -> Any:
    # NaN compares false with every bound, so it must be refused before the bounds.
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("must not be NaN")
    return value


def _one_of(choices: tuple, value: Any) -> Any:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, "
                         f"got {value!r}")
    return value


@dataclass(frozen=True)
class NoParams(Params):
    """For samplers without hyperparameters."""


NFEPerStep = Union[int, Callable[[Any], int]]
#: The run whose once-per-run cost (`Capabilities.extra_nfe`) listings show: 10 steps to
#: sigma = 0, a budget of the low-NFE regime.
LISTED_STEPS = 10


@dataclass(frozen=True)
class Capabilities:
    """What a sampler promises, checked by the harness and its conformance kit.

    Attributes:
        stochastic: draws noise during sampling (False: output is a function of x_T).
        order: convergence order at these params, the slope of log error on log step
            count as the conformance kit measures it (ODE order, or SDE weak order); 0
            for a scheme whose error does not vanish as steps are added, a fixed bias
            (a Langevin corrector at a fixed snr; restart intervals of a fixed step
            count): the kit then checks that its error stays away from 0.
        nfe_per_step: network evaluations per step, or a function of the params.
        final_step_nfe: evaluations of the last step when it lands on sigma = 0
            (e.g. 1 for Heun, whose last step is Euler); None means `nfe_per_step`.
        extra_nfe: evaluations spent once per run on top of the steps' (Restart's
            re-entered intervals): an int, or a function of (params, steps,
            final_sigma_zero).
        pf_ode: integrates the probability-flow ODE deterministically using only
            `model.ode_drift` and arithmetic on the state, so the harness may run it
            from data to noise to measure the likelihood of its own discretised flow.
    """

    stochastic: bool
    order: float
    nfe_per_step: NFEPerStep = 1
    final_step_nfe: Optional[NFEPerStep] = None
    pf_ode: bool = False
    extra_nfe: Union[int, Callable[[Any, int, bool], int]] = 0

    def __post_init__(self) -> None:
        if self.pf_ode and self.stochastic:
            raise ParameterError("a sampler cannot be both stochastic and a "
                                 "deterministic probability-flow ODE integrator (pf_ode)")
        if not self.order >= 0:  # NaN included
            raise ParameterError(f"order must be >= 0 (0: the error does not vanish), got "
                                 f"{self.order}")

    def per_step(self, params: Params) -> int:
        return _resolve(self.nfe_per_step, params)

    def extra(self, params: Params, steps: int, final_sigma_zero: bool = True) -> int:
        """The evaluations spent once in a run of `steps` steps (`extra_nfe`)."""
        return int(self.extra_nfe(params, steps, final_sigma_zero)
                   if callable(self.extra_nfe) else self.extra_nfe)

    def expected_nfe(self, steps: int, params: Params, final_sigma_zero: bool = True) -> int:
        """Network evaluations per sample for a run of `steps` steps."""
        per_step = self.per_step(params)
        extra = self.extra(params, steps, final_sigma_zero)
        if self.final_step_nfe is None or not final_sigma_zero:
            return steps * per_step + extra
        return (steps - 1) * per_step + _resolve(self.final_step_nfe, params) + extra

    def to_dict(self, params: Params, steps: int = LISTED_STEPS) -> dict[str, Any]:
        """The capabilities at `params` as plain data; `extra_nfe` is that of a run of
        `steps` steps to sigma = 0 (a function of the steps has no single value)."""
        return {"stochastic": self.stochastic, "order": self.order,
                "nfe_per_step": self.per_step(params),
                "final_step_nfe": (None if self.final_step_nfe is None
                                   else _resolve(self.final_step_nfe, params)),
                "extra_nfe": self.extra(params, steps),
                "pf_ode": self.pf_ode}


def _valid_name(name: str) -> bool:
    parts = name.split(":")
    return 1 <= len(parts) <= 2 and all(
        part and part.replace("_", "").replace("-", "").isalnum() for part in parts)


def _resolve(value: NFEPerStep, params: Params) -> int:
    return int(value(params) if callable(value) else value)


class SamplerFn(Protocol):
    def __call__(self, model: Any, x: Tensor, grid: Any, noise: Callable[[Tensor], Tensor],
                 callback: Callback, params: Any) -> Tensor: ...


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its function, parameter class, capabilities and source."""

    name: str
    fn: SamplerFn
    capabilities: Capabilities
    params: type[Params] = NoParams
    citation: str = ""

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise ParameterError(f"sampler name must be alphanumeric with _ or -, with at "
                                 f"most one 'library:' prefix (an adapted sampler, "
                                 f"'diffusers:DDIMScheduler'), got {self.name!r}")
        if not (isinstance(self.params, type) and issubclass(self.params, Params)):
            raise ParameterError(f"sampler {self.name!r}: params must be a Params subclass")
        if not callable(self.fn):
            raise ParameterError(f"sampler {self.name!r}: fn must be callable")

    def make_params(self, values: Mapping[str, Any] | None = None) -> Params:
        """Validated parameters; errors name this sampler and the offending parameter."""
        try:
            return self.params.from_mapping(values or {})
        except ParameterError as err:
            raise ParameterError(f"sampler {self.name!r}: {err}") from None

    def expected_nfe(self, steps: int, params: Params, final_sigma_zero: bool = True) -> int:
        return self.capabilities.expected_nfe(steps, params, final_sigma_zero)

    def __call__(self, model, x, grid, noise, callback: Callback = None,
                 params: Params | None = None) -> Tensor:
        return self.fn(model, x, grid, noise, callback,
                       self.make_params() if params is None else params)

    @property
    def summary(self) -> str:
        doc = (self.fn.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""
