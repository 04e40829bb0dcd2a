"""The conformance kit passes on every registered sampler and on the example plugin, and
rejects each deliberately broken sampler (tests/plugins and below) with its own message.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest
import torch

from harness import Capabilities, NoParams, Params, Sampler, UnknownNameError, param
from harness.models.oracle import GaussianMixture, mixture_64d
from harness.plugin.manager import get_plugins, load_plugins
from harness.core.sde import make_sde
from harness.testing import (CHECKS, ConformanceError, check_sampler, conformance_test,
                             kit_oracle)
from harness_plugins.euler import euler
from harness_plugins.euler_maruyama import euler_maruyama
from tests.conftest import all_sampler_names
from tests.plugins import example_plugin


def example_samplers() -> list[Sampler]:
    loaded = load_plugins(entry_points=[], extra=[("dpmsolver", example_plugin())])
    assert not loaded.failures, loaded.failures
    return [loaded.samplers.get(name) for name in loaded.samplers.names()]


# Every registered sampler, through the kit's own pytest helper, so that a newly
# installed plugin is covered without editing this file. The adapted samplers
# (`library:name`) have their kit verdicts pinned beside their adapters' tests.
test_registered_sampler_conforms = conformance_test(*all_sampler_names())

# The example plugin, also when it is not installed (if it is, it is covered above).
test_example_plugin_conforms = conformance_test(
    *[s for s in example_samplers() if s.name not in get_plugins().samplers])


def test_example_plugin_provides_dpmpp_2m_and_ddim():
    assert [s.name for s in example_samplers()] == ["example_ddim", "example_dpmpp_2m"]
    assert example_plugin().harness_api_version == 1


BROKEN = {
    "ignores_score": ("model", r"output does not follow the model: moving every mixture "
                               r"component by \+1 moves the samples by 0 on average"),
    "wrong_nfe": ("nfe", r"declares 5 NFE for 3 steps ending at sigma = 0 \(nfe_per_step=2, "
                         r"final_step_nfe=1\) but the model was evaluated 6 times per sample"),
    "batch_coupled_noise": ("batch", r"sample \d+ differs by .* between one batch of 16 and "
                                     r"two batches of 8: a sample's result depends on the "
                                     r"others in its batch"),
    "final_step_noise": ("final_step", r"final step leaves noise in: 1 noise draw\(s\) after "
                                       r"the last network evaluation reach the output and "
                                       r"add variance"),
}


@pytest.mark.parametrize("module", list(BROKEN))
def test_kit_rejects_broken_plugin_with_its_message(module):
    plugin = importlib.import_module(f"tests.plugins.{module}")
    loaded = load_plugins(entry_points=[], extra=[(module, plugin)])
    assert not loaded.failures, "the broken samplers must register fine"
    (name,) = loaded.samplers.names()
    check, message = BROKEN[module]
    with pytest.raises(ConformanceError, match=message) as caught:
        check_sampler(loaded.samplers.get(name))
    report = caught.value.report
    assert [r.name for r in report.failures] == [check]
    assert report.result("convergence").status == "skipped"
    assert isinstance(caught.value, AssertionError)


# --- the other checks, each against a sampler that breaks exactly it ----------------------

def _sampler(fn, stochastic=False, pf_ode=False, params=None, citation="a test", order=1,
             **caps):
    return Sampler(name=fn.__name__, fn=fn, params=params or NoParams,
                   capabilities=Capabilities(stochastic=stochastic, order=order,
                                             pf_ode=pf_ode, **caps),
                   citation=citation)


def _failure(sampler, check):
    report = check_sampler(sampler, raise_on_failure=False)
    failed = {r.name: r.message for r in report.failures}
    assert list(failed) == [check], str(report)
    return failed[check]


def test_a_stochastic_sampler_may_be_deterministic_at_other_params():
    report = check_sampler("langevin", {"S_churn": 0.0}, checks=["capabilities"])
    assert report.result("capabilities").message == (
        "deterministic at these params (stochastic at the defaults)")


def euler_with_global_rng(model, x, grid, noise, callback, params):
    """Euler plus a draw from torch's global generator: not reproducible."""
    x = euler(model, x, grid, noise, callback, params)
    return x + 1e-3 * torch.randn_like(x)


def test_seed_check_catches_randomness_outside_the_noise_source():
    message = _failure(_sampler(euler_with_global_rng, stochastic=True), "seed")
    assert "two runs with the same seed differ" in message
    assert "outside the `noise` source" in message
    report = check_sampler(_sampler(euler_with_global_rng, stochastic=True),
                           checks=["seed", "batch"], raise_on_failure=False)
    assert report.result("batch").status == "skipped"   # meaningless when not reproducible


def test_capability_check_catches_a_stochastic_sampler_declared_deterministic():
    params = get_plugins().samplers.get("euler_maruyama").params
    message = _failure(_sampler(euler_maruyama, params=params), "capabilities")
    assert message.startswith("declares stochastic=False but its output changes with the "
                              "noise stream")


def test_capability_check_catches_a_deterministic_sampler_declared_stochastic():
    message = _failure(_sampler(euler, stochastic=True), "capabilities")
    assert "declares stochastic=True but its output does not depend on the noise" in message


def ddim_claiming_pf_ode(model, x, grid, noise, callback, params):
    """Denoiser-based update, registered as if it used only model.ode_drift."""
    return example_plugin().DDIM.fn(model, x, grid, noise, callback, params)


def test_pf_ode_check_allows_only_ode_drift():
    message = _failure(_sampler(ddim_claiming_pf_ode, pf_ode=True), "capabilities")
    assert message == ("declares pf_ode=True but called model.denoise; a PF-ODE "
                       "integrator may only use model.ode_drift")


def euler_bypassing_the_counter(model, x, grid, noise, callback, params):
    """Euler that also evaluates the network through the uncounted `_denoise`."""
    model._denoise(x, torch.full((x.shape[0],), grid.sigma[0], dtype=x.dtype))
    return euler(model, x, grid, noise, callback, params)


def test_nfe_check_catches_evaluations_outside_the_counted_interface():
    message = _failure(_sampler(euler_bypassing_the_counter), "nfe")
    assert message.startswith("1 evaluations per sample bypassed the counted interface")


@dataclasses.dataclass(frozen=True)
class UncheckedParams(Params):
    strength: float = param(1.0, ge=0.0, doc="declared non-negative, never checked")

    def __post_init__(self):  # the bug: skips the base class's range checks
        pass


def test_parameter_check_catches_declared_ranges_that_are_not_enforced():
    message = _failure(_sampler(euler, params=UncheckedParams), "parameters")
    assert message == "parameter 'strength' declares ge=0.0 but -1.0 was accepted"


def test_a_missing_citation_fails_documentation_and_stops_no_other_check():
    report = check_sampler(_sampler(euler, citation=""), checks=["registration",
                           "documentation", "nfe"], raise_on_failure=False)
    assert [(r.name, r.status) for r in report.results] == [
        ("registration", "passed"), ("documentation", "failed"), ("nfe", "passed")]
    assert "no citation" in report.failures[0].message


def test_registration_refuses_what_is_not_a_sampler():
    with pytest.raises(ConformanceError, match=r"\[registration\] expected a harness.Sampler, "
                                               r"got function"):
        check_sampler(euler)


# --- the kit's machinery --------------------------------------------------------------

@pytest.mark.parametrize("process", ["vp", "edm"])
def test_kit_oracle_is_the_exact_mixture(process):
    kit, exact = kit_oracle(process), mixture_64d(make_sde(process))
    x = 2 * torch.randn(32, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.0, 0.01, 1.0, 80.0):
        torch.testing.assert_close(kit.denoise(x, sigma), exact.denoise(x, sigma),
                                   rtol=1e-10, atol=1e-12)
        t = float(exact.sde.t_of_sigma(sigma))
        torch.testing.assert_close(kit.score(x, t), exact.score(x, t), rtol=1e-10, atol=1e-12)
    per_sample = torch.linspace(0.1, 5.0, 32, dtype=torch.float64)   # the general path
    torch.testing.assert_close(kit.denoise(x, per_sample), exact.denoise(x, per_sample))


def test_kit_oracle_can_be_shifted():
    assert isinstance(kit_oracle("vp", shift=1.0), GaussianMixture)
    torch.testing.assert_close(kit_oracle("vp", shift=1.0).moments()[0],
                               kit_oracle("vp").moments()[0] + 1)


def test_order_check_catches_euler_declared_second_order():
    message = _failure(_sampler(euler, pf_ode=True, order=2), "order")
    assert re.match(r"declares order 2 but its PF-ODE error on the 64-D mixture .* falls "
                    r"like h\^(0\.[89]|1\.[01])\d .*declare order=1$", message), message


def test_order_check_catches_a_stochastic_scheme_declared_second_order():
    params = get_plugins().samplers.get("euler_maruyama").params
    message = _failure(_sampler(euler_maruyama, stochastic=True, params=params, order=2),
                       "order")
    assert re.match(r"declares order 2 but its weak error .* falls like h\^1\.", message)


def euler_nan_in_one_sample(model, x, grid, noise, callback, params):
    """Euler whose sample 0 ends as NaN: only `output` may blame it."""
    x = euler(model, x, grid, noise, callback, params).clone()
    x[0, 0] = float("nan")
    return x


def euler_in_place(model, x, grid, noise, callback, params):
    """Euler that writes its result into its input: only `output` may blame it."""
    return x.copy_(euler(model, x, grid, noise, callback, params))


@pytest.mark.parametrize("fn, message", [
    (euler_nan_in_one_sample, "1 NaN/Inf values in the output"),
    (euler_in_place, "modified its input x in place")])
def test_each_broken_behaviour_fails_only_the_check_that_names_it(fn, message):
    report = check_sampler(_sampler(fn, pf_ode=True), raise_on_failure=False)
    assert {r.name: r.message for r in report.failures} == {"output": message}, str(report)


def test_report_lists_every_check_and_subsets_run_alone():
    report = check_sampler("euler", checks=["registration", "nfe"])
    assert report.passed and [r.name for r in report.results] == ["registration", "nfe"]
    assert "passed  nfe" in str(report)
    assert list(CHECKS)[-1] == "convergence"
    with pytest.raises(ValueError, match="unknown checks"):
        check_sampler("euler", checks=["speed"])


def test_check_sampler_refuses_unknown_names_with_a_suggestion():
    with pytest.raises(UnknownNameError, match="Did you mean 'euler'"):
        check_sampler("eulr")


def test_params_that_do_not_validate_are_a_registration_failure():
    with pytest.raises(ConformanceError, match=r"\[registration\] params do not validate: "
                                               r".*'lam' must be >= 0.0"):
        check_sampler("lambda_sde", {"lam": -1.0})
