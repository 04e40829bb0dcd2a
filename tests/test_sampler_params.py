"""Bad names and bad hyperparameters are refused before any compute, with clear errors."""

from __future__ import annotations

import pytest

from harness import ParameterError, UnknownNameError, make_grid, make_sde
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
