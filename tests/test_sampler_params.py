"""Bad names and bad hyperparameters are refused before any compute, with clear errors."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import pytest

from harness import ParameterError, Params, UnknownNameError, make_grid, make_sde, param
from harness.plugin.manager import get_sampler


def test_unknown_sampler_lists_available_and_suggests(plugins):
    with pytest.raises(UnknownNameError) as err:
        get_sampler("heunn")
    message = str(err.value)
    assert "Did you mean 'heun'" in message
    for name in plugins.samplers.names():
        assert name in message


@pytest.mark.parametrize("sampler, values, fragment", [
    ("predictor_corrector", {"snr": -0.1}, "'snr' must be >= 0"),
    ("predictor_corrector", {"n_corrector_steps": 1.5}, "'n_corrector_steps' must be an "
                                                        "integer"),
    ("predictor_corrector", {"predictor": "ddim"}, "'predictor' must be one of"),
    ("langevin", {"S_noise": -1.0}, "'S_noise' must be >= 0"),
    ("langevin", {"S_churn": float("nan")}, "'S_churn' must not be NaN"),
    ("langevin", {"S_tmin": 5.0, "S_tmax": 1.0}, "'S_tmin' (5.0) must not exceed"),
    ("lambda_sde", {"lam": -1}, "'lam' must be >= 0"),
    ("euler_maruyama", {"keep_final_noise": 1}, "must be true or false"),
    ("heun", {"S_churn": 1.0}, "unknown parameter 'S_churn'"),
])
def test_invalid_hyperparameters_name_the_parameter(plugins, sampler, values, fragment):
    with pytest.raises(ParameterError) as err:
        get_sampler(sampler).make_params(values)
    assert fragment in str(err.value)
    assert repr(sampler) in str(err.value)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_below_one_are_refused(steps):
    with pytest.raises(ParameterError, match="steps must be an integer >= 1"):
        make_grid(make_sde("vp"), "karras", steps)


def test_unknown_schedule_is_refused():
    with pytest.raises(UnknownNameError, match="Did you mean 'karras'"):
        make_grid(make_sde("vp"), "karas", 10)


# --- the authoring API (`Params` + `param`) on a plugin's own dataclass -------------------


@dataclasses.dataclass(frozen=True)
class AuthorParams(Params):
    """Every kind of declaration a plugin author may write."""

    order: int = param(2, ge=1, le=3, doc="solver order")
    eta: float = param(0.0, ge=0.0, lt=1.0)
    rho: float = param(7.0, gt=0.0)
    method: str = param("midpoint", choices=("midpoint", "heun"))
    clip: bool = param(False)
    threshold: Optional[float] = param(None, ge=0.0)
    t_max: float = param(math.inf, ge=0.0)
    plain: int = 4                          # no `param(...)`: type-checked only


@pytest.mark.parametrize("values, message", [
    ({"order": 0}, "parameter 'order' must be an integer >= 1, got 0"),
    ({"order": 4}, "parameter 'order' must be an integer <= 3, got 4"),
    ({"order": 2.0}, "parameter 'order' must be an integer, got 2.0"),
    ({"order": True}, "parameter 'order' must be an integer, got True"),
    ({"eta": 1.0}, "parameter 'eta' must be < 1.0, got 1.0"),
    ({"rho": 0}, "parameter 'rho' must be > 0.0, got 0"),
    ({"rho": "7"}, "parameter 'rho' must be a number, got '7'"),
    ({"rho": float("nan")}, "parameter 'rho' must not be NaN"),
    ({"method": "euler"}, "parameter 'method' must be one of 'midpoint', 'heun', got 'euler'"),
    ({"clip": "yes"}, "parameter 'clip' must be true or false, got 'yes'"),
    ({"threshold": -1.0}, "parameter 'threshold' must be >= 0.0, got -1.0"),
    ({"plain": 1.5}, "parameter 'plain' must be an integer, got 1.5"),
    ({"ordr": 1}, "unknown parameter 'ordr'. Did you mean 'order'?"),
])
def test_declared_limits_are_enforced_with_the_parameter_named(values, message):
    with pytest.raises(ParameterError) as err:
        AuthorParams.from_mapping(values)
    assert str(err.value).startswith(message), str(err.value)


def test_direct_construction_is_checked_too():
    with pytest.raises(ParameterError, match="'eta' must be < 1.0"):
        AuthorParams(eta=2.0)


def test_valid_values_are_kept_and_integers_become_floats():
    p = AuthorParams.from_mapping({"order": 3, "eta": 0, "threshold": 2, "t_max": math.inf})
    assert (p.order, p.eta, p.threshold, p.t_max) == (3, 0.0, 2.0, math.inf)
    assert type(p.eta) is float and type(p.threshold) is float
    assert AuthorParams().to_dict()["method"] == "midpoint"


def test_a_default_outside_its_own_range_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Broken(Params):
        snr: float = param(-1.0, ge=0.0)

    with pytest.raises(ParameterError, match="'snr' must be >= 0.0, got -1.0"):
        Broken()


def test_the_params_json_schema_states_types_ranges_choices_and_docs():
    props = AuthorParams.json_schema()["properties"]
    assert props["order"] == {"default": 2, "description": "solver order", "maximum": 3,
                              "minimum": 1, "title": "Order", "type": "integer"}
    assert props["eta"]["exclusiveMaximum"] == 1.0 and props["rho"]["exclusiveMinimum"] == 0
    assert props["method"]["enum"] == ["midpoint", "heun"]
    assert "default" not in props["t_max"] and "inf" in props["t_max"]["description"]
