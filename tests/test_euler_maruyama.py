"""euler_maruyama: the reverse-SDE update with known noise, against Song et al. (2021)."""

from __future__ import annotations

import math

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import ring_2d

from . import gaussian_closed_form as cf


def _expected(name, x, z, keep_final_noise):
    # Reverse SDE dx = [f x - g^2 score] dt + g dw_bar, stepped on the grid's own spacing:
    # x_{i+1} = x_i + [f x_i - g^2 score] dt_i + g(t_i) sqrt(-dt_i) z_i (dt_i < 0);
    # the last step returns its mean unless the final noise is kept.
    times = cf.TIMES[name]
    steps = len(times) - 1
    for i in range(steps):
        t, dt = times[i], times[i + 1] - times[i]
        drift = cf.drift_coefficient(name, t) * x - cf.g2(name, t) * cf.score(name, x, t)
        x = x + drift * dt
        if i < steps - 1 or keep_final_noise:
            x = x + math.sqrt(cf.g2(name, t) * -dt) * z[i]
    return x


@pytest.mark.parametrize("keep_final_noise", [False, True])
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_each_step_is_the_reverse_sde_update_with_the_given_noise(plugins, name,
                                                                  keep_final_noise):
    model = cf.gaussian_data(make_sde(name))
    sampler = plugins.samplers.get("euler_maruyama")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=3, seed=2)
    params = sampler.make_params({"keep_final_noise": keep_final_noise})
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise, params=params)
    # One draw per step, and none on the last step unless asked for.
    assert noise.calls == (3 if keep_final_noise else 2)
    expected = _expected(name, x0, noise.draws, keep_final_noise)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_the_default_returns_the_last_step_mean(plugins):
    sampler = plugins.samplers.get("euler_maruyama")
    assert sampler.make_params().keep_final_noise is False


def test_the_callback_sees_each_state_and_its_mean(plugins):
    model = cf.gaussian_data(make_sde("vp"))
    sampler = plugins.samplers.get("euler_maruyama")
    grid = cf.grid(model.sde)
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=3, seed=2)
    record = cf.Recorder()
    out = sampler(model, x0, grid, noise, callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    # The first state is the first mean plus g sqrt(-dt) z_0; the last state is its mean.
    t0, dt = grid.t[0], grid.t[1] - grid.t[0]
    first = record.calls[0]
    torch.testing.assert_close(
        first["x"], first["x_mean"] + math.sqrt(cf.g2("vp", t0) * -dt) * noise.draws[0],
        rtol=1e-12, atol=1e-12)
    assert torch.equal(record.calls[-1]["x"], record.calls[-1]["x_mean"])
    assert torch.equal(record.calls[-1]["x"], out)


def test_one_evaluation_per_step(plugins):
    model = ring_2d(make_sde("vp"))
    sampler = plugins.samplers.get("euler_maruyama")
    counted = CountedModel(model)
    generate(counted, sampler, make_grid(model.sde, "log_snr", 5), 0, range(4))
    assert counted.nfe.calls == 5 == sampler.expected_nfe(5, sampler.make_params())


def test_declared_capabilities(plugins):
    caps = plugins.samplers.get("euler_maruyama").capabilities
    assert (caps.stochastic, caps.order, caps.nfe_per_step, caps.final_step_nfe,
            caps.pf_ode) == (True, 1, 1, None, False)
