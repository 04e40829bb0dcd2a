"""The kit's `order` check: two-sided for deterministic samplers, weak errors computed
exactly where the sampler is affine (Monte Carlo otherwise, said so), and order 0 (a
fixed bias) checked as an error that does not vanish."""

from __future__ import annotations

import re

import pytest
import torch

from harness import Capabilities, NoParams, ParameterError, Sampler
from harness.core.sde import make_sde
from harness.metrics.order import (
    ORDER_T_END,
    WEAK_DIM,
    WEAK_STD,
    exact_weak_errors,
    monte_carlo_weak_errors,
)
from harness.testing import check_sampler
from harness_plugins.euler_maruyama import euler_maruyama
from harness_plugins.heun import heun


def _declared(sampler, order, **changes):
    """A registered sampler under another declared order."""
    caps = sampler.capabilities
    fields = dict(stochastic=caps.stochastic, order=order, nfe_per_step=caps.nfe_per_step,
                  final_step_nfe=caps.final_step_nfe, pf_ode=caps.pf_ode,
                  extra_nfe=caps.extra_nfe, **changes)
    return Sampler(name=f"{sampler.name}_as_{order}", fn=sampler.fn,
                   capabilities=Capabilities(**fields), params=sampler.params,
                   citation=sampler.citation)


def _order_message(sampler, expect="failed"):
    report = check_sampler(sampler, checks=["order"], raise_on_failure=False)
    result = report.result("order")
    assert result.status == expect, str(report)
    return result.message


# --- deterministic: measured within [declared - 0.3, declared + 0.5] ----------------------

def test_heun_declared_first_order_is_caught_by_the_upper_bound(plugins):
    message = _order_message(_declared(plugins.samplers.get("heun"), 1))
    assert re.match(r"declares order 1 but its PF-ODE error .* falls like h\^1\.8\d \(allowed "
                    r"from 0\.3 below to 0\.5 above the declared order\); declare order=2$",
                    message), message


def test_heun_declared_third_order_is_caught_by_the_lower_bound(plugins):
    message = _order_message(_declared(plugins.samplers.get("heun"), 3))
    assert re.match(r"declares order 3 but .* falls like h\^1\.8\d .*declare order=2$",
                    message), message


def test_a_multistep_scheme_steeper_than_its_order_on_the_window_passes(plugins):
    # iPNDM's fixed AB4 weights: 2.34 over 32-256 steps, order 2 asymptotically.
    message = _order_message(plugins.samplers.get("ipndm"), expect="passed")
    assert message.startswith("PF-ODE error falls like h^2.3"), message


# --- stochastic: exact weak errors where the sampler is affine ---------------------------

def _variance(t):
    sde = make_sde("vp")
    return float(sde.scale(t)) ** 2 * (WEAK_STD**2 + float(sde.sigma(t)) ** 2)


MIX = torch.tensor([[1.0, 0.5], [-0.25, 0.75]], dtype=torch.float64)
OFFSET = 0.125


def mixing_affine_map(model, x, grid, noise, callback, params):
    """y = M x_T + c + z_1 B_1 + z_2 B_2, pairs of coordinates mixed: a closed-form law."""
    pairs = x.shape[1] // 2
    blocks = torch.block_diag(*[MIX] * pairs)
    return x @ blocks + OFFSET + 0.5 * noise(x) + noise(x) @ (0.25 * blocks)


def test_exact_weak_error_equals_the_closed_form_of_an_affine_map():
    sampler = Sampler(name="mixing", fn=mixing_affine_map, citation="test",
                      capabilities=Capabilities(stochastic=True, order=1))
    blocks = torch.block_diag(*[MIX] * (WEAK_DIM // 2))
    # E|y|^2 = v_T |M|_F^2 + |c|^2 + |B_1|_F^2 + |B_2|_F^2 for x_T ~ N(0, v_T I).
    second = (_variance(make_sde("vp").T) * blocks.pow(2).sum() + WEAK_DIM * OFFSET**2
              + WEAK_DIM * 0.25 + (0.25 * blocks).pow(2).sum())
    expected = float(second) / (WEAK_DIM * _variance(ORDER_T_END)) - 1
    errors = exact_weak_errors(sampler, NoParams())
    assert errors == pytest.approx([expected] * 4, rel=1e-12)


def test_exact_weak_errors_agree_with_monte_carlo(plugins):
    sampler = plugins.samplers.get("dpmpp_2m_sde")
    exact = exact_weak_errors(sampler, sampler.make_params())
    sampled = monte_carlo_weak_errors(sampler, sampler.make_params())
    for e, (m, se) in zip(exact, sampled):
        assert abs(e - m) <= 4 * se, (exact, sampled)


def cubic(model, x, grid, noise, callback, params):
    """Euler-Maruyama plus a cubic term: affine at the unit vectors only (x^3 = x)."""
    return euler_maruyama(model, x, grid, noise, callback, params) + 0.01 * x**3


def noise_while_large(model, x, grid, noise, callback, params):
    """Draws noise only while the state is large: the draw count depends on the input."""
    while x.abs().max() > 0.5:
        x = 0.5 * x + 0.01 * noise(x)
    return model.denoise(x, grid.sigma[-1])


@pytest.mark.parametrize("fn", [cubic, noise_while_large])
def test_a_sampler_that_is_not_affine_gets_no_exact_errors(plugins, fn):
    params = plugins.samplers.get("euler_maruyama").make_params()
    sampler = Sampler(name=fn.__name__, fn=fn, citation="test", params=type(params),
                      capabilities=Capabilities(stochastic=True, order=1))
    assert exact_weak_errors(sampler, params) is None


def test_predictor_corrector_is_affine_only_without_its_corrector(plugins):
    pc = plugins.samplers.get("predictor_corrector")
    assert exact_weak_errors(pc, pc.make_params()) is None        # norm-based step size
    assert exact_weak_errors(pc, pc.make_params({"corrector": "none"})) is not None


def test_the_message_says_how_the_weak_error_was_found(plugins):
    assert "computed exactly from its affine map" in _order_message(
        plugins.samplers.get("langevin"), expect="passed")
    assert "Monte Carlo, 20000 samples: not affine" in _order_message(
        plugins.samplers.get("predictor_corrector"), expect="passed")


# --- order 0: a fixed bias, checked as an error that does not vanish ----------------------

def test_a_converging_stochastic_scheme_declared_biased_fails(plugins):
    message = _order_message(_declared(plugins.samplers.get("euler_maruyama"), 0))
    assert re.match(r"declares order 0 \(a fixed bias: the error does not vanish\) but its "
                    r"weak error .* still falls like h\^1\.\d\d from 64 to 128 steps",
                    message), message


def test_a_converging_ode_solver_declared_biased_fails():
    sampler = Sampler(name="heun", fn=heun, citation="test", capabilities=Capabilities(
        stochastic=False, order=0, nfe_per_step=2, final_step_nfe=1))
    assert "still falls like h^1.9" in _order_message(sampler)


def test_restart_declared_second_order_is_told_its_error_levels_off(plugins):
    message = _order_message(_declared(plugins.samplers.get("restart"), 2))
    assert message.endswith("; its error levels off (h^0.40 from 64 to 128 steps): declare "
                            "order=0 if the scheme has a fixed bias, else declare "
                            "order=1"), message


def test_a_negative_order_is_refused_and_zero_accepted():
    with pytest.raises(ParameterError, match=r"order must be >= 0 \(0: the error does not "
                                             r"vanish\), got -1"):
        Capabilities(stochastic=True, order=-1)
    assert Capabilities(stochastic=True, order=0).order == 0
    with pytest.raises(ParameterError, match="order must be >= 0"):
        Capabilities(stochastic=True, order=float("nan"))


def test_capabilities_list_the_once_per_run_cost(plugins):
    restart = plugins.samplers.get("restart")
    params = restart.make_params()
    assert restart.capabilities.to_dict(params)["extra_nfe"] == 8   # 2 K restart_steps
    assert restart.capabilities.to_dict(params, steps=1)["extra_nfe"] == 0
    assert plugins.samplers.get("heun").capabilities.to_dict(NoParams())["extra_nfe"] == 0
