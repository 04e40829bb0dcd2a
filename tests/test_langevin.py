"""langevin: Karras et al. 2022, Alg. 2 (stochastic churn + Heun), with known noise."""

from __future__ import annotations

import math

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d, ring_2d

from . import gaussian_closed_form as cf
from .test_heun import edm_heun


def edm_algorithm_2(x, times, z, S_churn, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0):
    """Alg. 2 with sigma(t) = t, s(t) = 1 and the exact Gaussian denoiser.

    Returns the result and how many noise draws it used.
    """
    n, used = len(times) - 1, 0
    gamma_max = min(S_churn / n, math.sqrt(2) - 1)
    for i in range(n):
        t_cur, t_next = times[i], times[i + 1]
        gamma = gamma_max if S_tmin <= t_cur <= S_tmax else 0.0
        t_hat = t_cur + gamma * t_cur                              # increase noise
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * S_noise * z[used]
            used += 1
        x = edm_heun(x, (t_hat, t_next))                           # Heun step from t_hat
    return x, used


def _run(plugins, name, params, draws=3):
    model = cf.gaussian_data(make_sde(name))
    sampler = plugins.samplers.get("langevin")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=draws, seed=4)
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise,
                  params=sampler.make_params(params))
    return x0, noise, out


@pytest.mark.parametrize("params", [
    {"S_churn": 0.6, "S_noise": 1.007},          # gamma = S_churn / N = 0.2 on every step
    {},                                          # the defaults: S_churn = 10, capped
])
def test_edm_steps_follow_algorithm_2(plugins, params):
    x0, noise, out = _run(plugins, "edm", params)
    expected, used = edm_algorithm_2(x0, cf.TIMES["edm"], noise.draws,
                                     **{"S_churn": 10.0, **params})
    assert noise.calls == used == 3
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_churn_is_capped_at_sqrt2_minus_1(plugins):
    # gamma = sqrt(2) - 1 doubles the variance: sigma_hat = sqrt(2) sigma_i, and the
    # added noise has std sqrt(sigma_hat^2 - sigma_i^2) = sigma_i.
    x0, noise, out = _run(plugins, "edm", {"S_churn": 100.0})
    x, times = x0, cf.TIMES["edm"]
    for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
        x = edm_heun(x + t_cur * noise.draws[i], (math.sqrt(2) * t_cur, t_next))
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


def test_churn_only_where_s_tmin_le_sigma_le_s_tmax(plugins):
    # A window of one point, sigma_1 itself: ties are inside, so exactly step 1 churns.
    sigma_1 = cf.TIMES["edm"][1]
    params = {"S_churn": 0.6, "S_tmin": sigma_1, "S_tmax": sigma_1}
    x0, noise, out = _run(plugins, "edm", params)
    expected, used = edm_algorithm_2(x0, cf.TIMES["edm"], noise.draws, **params)
    assert noise.calls == used == 1
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_vp_churn_moves_to_t_of_sigma_hat_and_rescales_by_s(plugins):
    # The general form: sigma_hat = (1 + gamma) sigma_i, t_hat = sigma^-1(sigma_hat),
    # x_hat = s(t_hat)/s(t_i) x + s(t_hat) sqrt(sigma_hat^2 - sigma_i^2) z, then Heun.
    times = (1.0, 0.4)
    model = cf.gaussian_data(make_sde("vp"))
    sampler = plugins.samplers.get("langevin")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=1, seed=5)
    out = sampler(model, x0.clone(), cf.grid(model.sde, times), noise,
                  params=sampler.make_params({"S_churn": 0.3}))
    sigma_i = cf.vp_sigma(times[0])
    sigma_hat = 1.3 * sigma_i
    t_hat = cf.vp_t_of_sigma(sigma_hat)
    s_i, s_hat = cf.alpha("vp", times[0]), cf.alpha("vp", t_hat)
    x_hat = s_hat / s_i * x0 + s_hat * math.sqrt(sigma_hat**2 - sigma_i**2) * noise.draws[0]
    h = times[1] - t_hat
    d_cur = cf.pf_ode_drift("vp", x_hat, t_hat)
    d_prime = cf.pf_ode_drift("vp", x_hat + h * d_cur, times[1])
    torch.testing.assert_close(out, x_hat + h / 2 * (d_cur + d_prime), rtol=1e-11,
                               atol=1e-11)


def test_the_defaults_are_those_of_the_paper_s_stochastic_sampler(plugins):
    params = plugins.samplers.get("langevin").make_params()
    assert (params.S_churn, params.S_tmin, params.S_tmax, params.S_noise) == (
        10.0, 0.0, math.inf, 1.0)


def test_s_tmin_above_s_tmax_is_refused(plugins):
    with pytest.raises(Exception, match="S_tmin"):
        plugins.samplers.get("langevin").make_params({"S_tmin": 2.0, "S_tmax": 1.0})


def test_the_callback_sees_every_step(plugins):
    model = cf.gaussian_data(make_sde("edm"))
    grid = cf.grid(model.sde)
    record = cf.Recorder()
    sampler = plugins.samplers.get("langevin")
    out = sampler(model, cf.start(), grid, cf.ScriptedNoise((4, 3), 3), callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    assert torch.equal(record.calls[-1]["x"], out)


def test_no_churn_is_heun_bit_for_bit(plugins):
    for sde in ("vp", "edm"):
        model = mixture_64d(make_sde(sde))
        grid = make_grid(model.sde, "karras", 10)
        langevin = plugins.samplers.get("langevin")
        still = generate(model, langevin, grid, 3, range(32),
                         params=langevin.make_params({"S_churn": 0.0}))
        heun = generate(model, plugins.samplers.get("heun"), grid, 3, range(32))
        assert torch.equal(still, heun)


def test_nfe_is_two_per_step_less_one(plugins):
    model = ring_2d(make_sde("vp"))
    langevin = plugins.samplers.get("langevin")
    counted = CountedModel(model)
    generate(counted, langevin, make_grid(model.sde, "karras", 7), 0, range(4))
    assert counted.nfe.calls == 13 == langevin.expected_nfe(7, langevin.make_params())


def test_declared_capabilities(plugins):
    caps = plugins.samplers.get("langevin").capabilities
    assert (caps.stochastic, caps.order, caps.nfe_per_step, caps.final_step_nfe,
            caps.pf_ode) == (True, 2, 2, 1, False)
