"""predictor_corrector: Song et al. 2021 PC sampling with known noise; NFE; per-sample steps."""

from __future__ import annotations

import math

import pytest
import torch

from harness import CountedModel, generate, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d, ring_2d

from . import gaussian_closed_form as cf


def song_pc(name, x, z, predictor="reverse_diffusion", snr=0.16, n_corrector_steps=1):
    """Song et al. 2021, Alg. 2-5 with the exact Gaussian score; returns (x, draws used).

    Corrector (Alg. 4/5): eps = 2 alpha_i (snr |z| / |score|)^2 per sample,
    x <- x + eps score + sqrt(2 eps) z, with alpha_i = 1 - beta_i (VP) or 1 (VE), where
    1 - beta_i = abar(t_i) / abar(t_{i+1}). Reverse-diffusion predictor: VE
    x <- x + (sigma_i^2 - sigma_{i+1}^2) score + sqrt(sigma_i^2 - sigma_{i+1}^2) z;
    VP x <- (2 - sqrt(1 - beta_i)) x + beta_i score + sqrt(beta_i) z. Euler-Maruyama
    predictor: the reverse SDE on the grid's spacing. The last predictor step is its mean.
    """
    times, used = cf.TIMES[name], 0
    steps = len(times) - 1
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        alpha_i = (cf.alpha(name, t) / cf.alpha(name, t_next)) ** 2
        for _ in range(n_corrector_steps):
            grad, noise = cf.score(name, x, t), z[used]
            used += 1
            ratio = snr * noise.norm(dim=1, keepdim=True) / grad.norm(dim=1, keepdim=True)
            eps = 2 * alpha_i * ratio**2
            x = x + eps * grad + (2 * eps).sqrt() * noise
        score = cf.score(name, x, t)
        if predictor == "euler_maruyama":
            dt = t_next - t
            mean = x + (cf.drift_coefficient(name, t) * x - cf.g2(name, t) * score) * dt
            std = math.sqrt(cf.g2(name, t) * -dt)
        elif name == "ve":
            var = cf.ve_sigma(t) ** 2 - cf.ve_sigma(t_next) ** 2
            mean, std = x + var * score, math.sqrt(var)
        else:
            beta_i = 1 - alpha_i
            mean = (2 - math.sqrt(1 - beta_i)) * x + beta_i * score
            std = math.sqrt(beta_i)
        if i < steps - 1:
            x = mean + std * z[used]
            used += 1
        else:
            x = mean
    return x, used


def _run(plugins, name, params, draws):
    model = cf.gaussian_data(make_sde(name))
    sampler = plugins.samplers.get("predictor_corrector")
    x0 = cf.start()
    noise = cf.ScriptedNoise(x0.shape, count=draws, seed=6)
    out = sampler(model, x0.clone(), cf.grid(model.sde), noise,
                  params=sampler.make_params(params))
    return x0, noise, out


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_the_defaults_are_one_langevin_step_at_snr_0_16_then_reverse_diffusion(plugins, name):
    x0, noise, out = _run(plugins, name, {}, draws=5)
    expected, used = song_pc(name, x0, noise.draws)
    assert noise.calls == used == 5
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, predictor", [
    ("ve", "reverse_diffusion"), ("vp", "reverse_diffusion"), ("vp", "euler_maruyama"),
    ("subvp", "euler_maruyama"), ("edm", "euler_maruyama")])
def test_two_corrector_steps_and_the_predictor_follow_song_et_al(plugins, name, predictor):
    params = {"predictor": predictor, "snr": 0.3, "n_corrector_steps": 2}
    x0, noise, out = _run(plugins, name, params, draws=8)
    expected, used = song_pc(name, x0, noise.draws, predictor, snr=0.3, n_corrector_steps=2)
    assert noise.calls == used == 8
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_without_a_corrector_only_the_predictor_runs(plugins, name):
    x0, noise, out = _run(plugins, name, {"corrector": "none", "n_corrector_steps": 3},
                          draws=2)
    expected, used = song_pc(name, x0, noise.draws, n_corrector_steps=0)
    assert noise.calls == used == 2
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_the_callback_sees_each_state_and_its_mean(plugins):
    model = cf.gaussian_data(make_sde("ve"))
    grid = cf.grid(model.sde)
    record = cf.Recorder()
    sampler = plugins.samplers.get("predictor_corrector")
    out = sampler(model, cf.start(), grid, cf.ScriptedNoise((4, 3), 5), callback=record)
    assert [c["i"] for c in record.calls] == [0, 1, 2]
    assert [c["t"] for c in record.calls] == list(grid.t[1:])
    assert not torch.equal(record.calls[0]["x"], record.calls[0]["x_mean"])
    assert torch.equal(record.calls[-1]["x_mean"], out)
    assert torch.equal(record.calls[-1]["x"], out)


@pytest.mark.parametrize("corrector, n, per_step", [
    ("langevin", 1, 2), ("langevin", 3, 4), ("langevin", 0, 1), ("none", 2, 1)])
def test_nfe_is_counted_with_and_without_a_corrector(plugins, corrector, n, per_step):
    model = ring_2d(make_sde("ve"))
    pc = plugins.samplers.get("predictor_corrector")
    params = pc.make_params({"corrector": corrector, "n_corrector_steps": n})
    counted = CountedModel(model)
    generate(counted, pc, make_grid(model.sde, "karras", 6), 0, range(4), params=params)
    assert counted.nfe.calls == 6 * per_step == pc.expected_nfe(6, params)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama"])
def test_corrector_step_size_is_per_sample(plugins, predictor):
    # A sample's trajectory must not change when its batch-mates change.
    model = mixture_64d(make_sde("vp"))
    pc = plugins.samplers.get("predictor_corrector")
    params = pc.make_params({"predictor": predictor})
    grid = make_grid(model.sde, "karras", 8)
    together = generate(model, pc, grid, 0, range(32), params=params)
    alone = generate(model, pc, grid, 0, [5], params=params)
    torch.testing.assert_close(alone[0], together[5], rtol=1e-12, atol=1e-12)


def test_declared_capabilities(plugins):
    caps = plugins.samplers.get("predictor_corrector").capabilities
    assert (caps.stochastic, caps.order, caps.final_step_nfe, caps.pf_ode) == (
        True, 0, None, False)
