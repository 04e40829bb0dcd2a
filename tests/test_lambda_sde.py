"""lambda_sde: the reverse-SDE family between the PF-ODE (lam=0) and reverse SDE (lam=1)."""

from __future__ import annotations

import math

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import ring_2d

from . import gaussian_closed_form as cf


def _expected(name, x, z, lam):
    # dx = [f x - (1 + lam^2)/2 g^2 score] dt + lam g dw_bar (Song et al. 2021, App. D.1;
    # Karras et al. 2022, Eq. 6), Euler-Maruyama on the grid; the last step is the mean.
    times = cf.TIMES[name]
    steps = len(times) - 1
    for i in range(steps):
        t, dt = times[i], times[i + 1] - times[i]
        weight = (1 + lam**2) / 2 * cf.g2(name, t)
        x = x + (cf.drift_coefficient(name, t) * x - weight * cf.score(name, x, t)) * dt
        if i < steps - 1:
            x = x + lam * math.sqrt(cf.g2(name, t) * -dt) * z[i]
    return x


@pytest.mark.parametrize("lam", [0.5, 1.3])
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_each_step_is_the_lambda_sde_update_with_the_given_noise(plugins, name, lam):
    model = cf.gaussian_data(make_sde(name))
    sampler = plugins.samplers.get("lambda_sde")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=2, seed=3)
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise,
                  params=sampler.make_params({"lam": lam}))
    assert noise.calls == 2                                  # none on the last step
    torch.testing.assert_close(out, _expected(name, x0, noise.draws, lam), rtol=1e-12,
                               atol=1e-12)


def test_the_default_is_lam_one_half(plugins):
    model = cf.gaussian_data(make_sde("vp"))
    sampler = plugins.samplers.get("lambda_sde")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=2, seed=3)
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise)
    torch.testing.assert_close(out, _expected("vp", x0, noise.draws, 0.5), rtol=1e-12,
                               atol=1e-12)


def test_lambda_zero_is_the_pf_ode_and_draws_no_noise(plugins):
    model = cf.gaussian_data(make_sde("ve"))
    sampler = plugins.samplers.get("lambda_sde")
    x0 = cf.start()
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise=None,
                  params=sampler.make_params({"lam": 0.0}))
    expected, times = x0, cf.TIMES["ve"]
    for t_cur, t_next in zip(times[:-1], times[1:]):
        expected = expected + (t_next - t_cur) * cf.pf_ode_drift("ve", expected, t_cur)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_negative_lambda_is_refused(plugins):
    with pytest.raises(Exception, match="lam"):
        plugins.samplers.get("lambda_sde").make_params({"lam": -0.1})


def test_the_callback_sees_every_step(plugins):
    model = cf.gaussian_data(make_sde("vp"))
    grid = cf.grid(model.sde)
    record = cf.Recorder()
    out = plugins.samplers.get("lambda_sde")(model, cf.start(), grid,
                                             cf.ScriptedNoise((4, 3), 2), callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    assert torch.equal(record.calls[-1]["x"], out)


def test_lambda_zero_is_euler_and_lambda_one_is_euler_maruyama(plugins):
    model = ring_2d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 10)
    lam = plugins.samplers.get("lambda_sde")
    ode = generate(model, lam, grid, 0, range(16), params=lam.make_params({"lam": 0.0}))
    euler = generate(model, plugins.samplers.get("euler"), grid, 0, range(16))
    torch.testing.assert_close(ode, euler, rtol=1e-12, atol=1e-12)
    sde_run = generate(model, lam, grid, 0, range(16), params=lam.make_params({"lam": 1.0}))
    em = generate(model, plugins.samplers.get("euler_maruyama"), grid, 0, range(16))
    torch.testing.assert_close(sde_run, em, rtol=1e-12, atol=1e-12)


def test_one_evaluation_per_step_and_declared_capabilities(plugins):
    model = ring_2d(make_sde("vp"))
    sampler = plugins.samplers.get("lambda_sde")
    counted = CountedModel(model)
    generate(counted, sampler, make_grid(model.sde, "karras", 6), 0, range(4))
    assert counted.nfe.calls == 6 == sampler.expected_nfe(6, sampler.make_params())
    caps = sampler.capabilities
    assert (caps.stochastic, caps.order, caps.pf_ode) == (True, 1, False)
