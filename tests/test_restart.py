"""restart: Algorithm 1 against a by-hand run on Gaussian data, the forward jump against the
process's transition, and the law of its output against the data's.

No library ships Restart in a form to call (the authors' code is a script around EDM's
networks), so every step is written here from the paper with the closed forms of
`gaussian_closed_form`: Heun's steps on the PF-ODE drift, the forward jump
x <- a x + b z with a = alpha(t_max) / alpha(t_min) and b^2 = v(t_max) - a^2 v(t_min)
(v the perturbation kernel's variance), and the restart grid, Karras' formula with
rho = 7 between sigma_max and sigma_min, mapped to times by inverting sigma(t)
numerically. For Gaussian data every step is affine, so the output's law is Gaussian
and computed exactly from the sampler's own runs.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import brentq

from harness import ParameterError, make_grid
from harness.core.sde import make_sde

from . import gaussian_closed_form as cf
from .gaussian_flow_support import fitted_order, noise_level


def _time_of(name, sigma):
    if name == "edm":
        return sigma
    return brentq(lambda t: noise_level(name, t) - sigma, 0.0, 1.0, xtol=1e-15, rtol=1e-15)


def _heun(name, x, t_cur, t_next):
    d_cur = cf.pf_ode_drift(name, x, t_cur)
    euler = x + (t_next - t_cur) * d_cur
    if cf.kernel_variance(name, t_next) == 0:
        return euler
    return x + (t_next - t_cur) / 2 * (d_cur + cf.pf_ode_drift(name, euler, t_next))


def _restart_by_hand(name, x, times, draws, sigma_min, sigma_max, restarts, steps):
    """Algorithm 1: Heun on the main grid; at the point nearest sigma_min, `restarts`
    times: jump to sigma_max by the forward process, Heun back in `steps` steps."""
    sigmas = [noise_level(name, t) for t in times]
    candidates = [i for i in range(1, len(times)) if 0 < sigmas[i] < sigma_max]
    at = min(candidates, key=lambda i: abs(sigmas[i] - sigma_min), default=None)
    for i in range(len(times) - 1):
        x = _heun(name, x, times[i], times[i + 1])
        if i + 1 != at:
            continue
        t_lo, t_hi = times[at], _time_of(name, sigma_max)
        hi, lo = sigma_max ** (1 / 7), sigmas[at] ** (1 / 7)
        inner = [(hi + j / steps * (lo - hi)) ** 7 for j in range(1, steps)]
        path = [t_hi] + [_time_of(name, s) for s in inner] + [t_lo]
        a = cf.alpha(name, t_hi) / cf.alpha(name, t_lo)
        b = math.sqrt(cf.kernel_variance(name, t_hi) - a**2 * cf.kernel_variance(name, t_lo))
        for _ in range(restarts):
            x = a * x + b * draws(x)
            for t_cur, t_next in zip(path, path[1:]):
                x = _heun(name, x, t_cur, t_next)
    return x


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
@pytest.mark.parametrize("options", [
    {},                                                       # the paper's CIFAR-10 setting
    {"sigma_min_restart": 0.5, "sigma_max_restart": 2.0, "restarts": 3, "restart_steps": 3},
])
def test_every_step_is_algorithm_1_written_by_hand(plugins, name, options):
    sampler = plugins.samplers.get("restart")
    params = sampler.make_params(options)
    model = cf.gaussian_data(make_sde(name))
    grid = make_grid(model.sde, "karras", 7)
    x = cf.start()
    ours = sampler(model, x, grid, cf.ScriptedNoise(x.shape, 3, seed=5), params=params)
    expected = _restart_by_hand(name, x, grid.t, cf.ScriptedNoise(x.shape, 3, seed=5),
                                params.sigma_min_restart, params.sigma_max_restart,
                                params.restarts, params.restart_steps)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


class _Recorder:
    """Keeps the (x, t) of every score evaluation of a model."""

    def __init__(self, model):
        self.calls, self._score = [], model.score
        model.score = self

    def __call__(self, x, t):
        self.calls.append((x.clone(), float(t)))
        return self._score(x, t)


class _Constant:
    """noise(x) returning the same value everywhere."""

    def __init__(self, value):
        self.value = value

    def __call__(self, x):
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_the_forward_jump_carries_the_marginal_at_t_min_to_that_at_t_max(plugins, name):
    # x_jump = a x_min + b z: a from z = 0, b from z = 1; x_min from the same run without
    # restarts. The exact marginal N(alpha mu, (alpha^2 S0^2 + v) I) must map onto itself.
    sampler = plugins.samplers.get("restart")
    grid = make_grid(make_sde(name), "karras", 6)
    x = cf.start()
    t_max = _time_of(name, 0.30)

    def run(restarts, z):
        model = cf.gaussian_data(make_sde(name))
        record, seen = _Recorder(model), []
        params = sampler.make_params({"restarts": restarts, "restart_steps": 1})
        sampler(model, x, grid, _Constant(z), callback=seen.append, params=params)
        return record.calls, seen

    calls, seen = run(0, 0.0)
    at = min(range(1, 6), key=lambda i: abs(grid.sigma[i] - 0.06))
    x_min = seen[at - 1]["x"]
    jumps = []
    for z in (0.0, 1.0):
        calls, _ = run(1, z)
        jumps.append(next(c for c, t in calls if t == pytest.approx(t_max, abs=1e-12)))
    a, b = jumps[0] / x_min, jumps[1] - jumps[0]
    assert float((a - a.mean()).abs().max()) < 1e-12 and float(b.std()) < 1e-12

    def marginal(t):
        return cf.alpha(name, t), cf.alpha(name, t) ** 2 * cf.S0**2 + cf.kernel_variance(name, t)

    (m_lo, var_lo), (m_hi, var_hi) = marginal(grid.t[at]), marginal(t_max)
    assert float(a.mean()) * m_lo == pytest.approx(m_hi, rel=1e-12)
    assert float(a.mean()) ** 2 * var_lo + float(b.mean()) ** 2 == pytest.approx(var_hi,
                                                                                  rel=1e-12)


class _OneHot:
    """noise(x): ones on draw `hot` (counted from 1), zeros otherwise."""

    def __init__(self, hot):
        self.hot, self.calls = hot, 0

    def __call__(self, x):
        self.calls += 1
        return torch.full_like(x, 1.0 if self.calls == self.hot else 0.0)


def _variance_error(plugins, name, steps, params):
    """|Var(output) - S0^2| from x_T ~ the exact marginal at T: the output is
    m x_T + c + sum_k b_k z_k, so Var = m^2 Var(x_T) + sum_k b_k^2."""
    sampler = plugins.samplers.get("restart")
    model = cf.gaussian_data(make_sde(name))
    grid = make_grid(model.sde, "karras", steps)
    zero = torch.zeros(1, 3, dtype=torch.float64)
    c = sampler(model, zero, grid, _OneHot(0), params=params)
    m = sampler(model, zero + 1, grid, _OneHot(0), params=params) - c
    b2 = sum((sampler(model, zero, grid, _OneHot(k), params=params) - c) ** 2
             for k in range(1, params.restarts + 1))
    t = grid.t[0]
    var_t = cf.alpha(name, t) ** 2 * cf.S0**2 + cf.kernel_variance(name, t)
    return float((m**2 * var_t + b2 - cf.S0**2).abs().max())


LAW_STEPS = (16, 32, 64, 128)


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_the_law_converges_like_h2_when_the_restart_steps_grow_with_the_steps(plugins, name):
    sampler = plugins.samplers.get("restart")
    errors = [_variance_error(plugins, name, n, sampler.make_params({"restart_steps": n // 4}))
              for n in LAW_STEPS]
    assert fitted_order(LAW_STEPS, errors) >= 2 - 0.3, errors   # Heun's order


def test_at_fixed_restart_steps_the_error_stops_at_the_restart_odes_own(plugins):
    # What the module docstring says: the defaults' 2 restart steps leave a floor.
    sampler = plugins.samplers.get("restart")
    errors = [_variance_error(plugins, "edm", n, sampler.make_params()) for n in (64, 128)]
    refined = _variance_error(plugins, "edm", 128, sampler.make_params({"restart_steps": 32}))
    assert errors[1] > 0.7 * errors[0] and refined < errors[1] / 5, (errors, refined)


def test_bad_intervals_are_refused_naming_what_was_given(plugins):
    sampler = plugins.samplers.get("restart")
    with pytest.raises(ParameterError, match=r"'sigma_min_restart' \(0.5\) must be below "
                                             r"'sigma_max_restart' \(0.3\)"):
        sampler.make_params({"sigma_min_restart": 0.5})
    model = cf.gaussian_data(make_sde("ve"))
    with pytest.raises(ParameterError, match=r"sigma_max_restart \(60.0\) exceeds"):
        sampler(model, cf.start(), make_grid(model.sde, "karras", 4), None,
                params=sampler.make_params({"sigma_max_restart": 60.0}))
    with pytest.raises(ParameterError, match=r"sigma_max_restart \(0.005\) is not above"):
        sampler(model, cf.start(), make_grid(model.sde, "karras", 4), None,
                params=sampler.make_params({"sigma_min_restart": 0.001,
                                            "sigma_max_restart": 0.005}))
