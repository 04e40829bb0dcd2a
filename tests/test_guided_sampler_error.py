"""The sampler-error metrics under classifier-free guidance, on the conditional oracle.

`ode_error` of a guided trial is measured against the guided PF-ODE: here an independent
reference integrates the closed-form guided drift written in this file (autograd of the
Gaussian log-densities, torchdiffeq at tight tolerances) from each sample's x_T.
References are never shared across guidance scales or labels. `discrete_kl` gives no
value for a guided trial and says why.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

import harness_plugins.sampler_error_metrics as plugin
from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.configuration.suite import build_suite
from harness.core.distributed import resolve_device
from harness.core.guidance import GuidedModel
from harness.core.labels import sample_labels
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import make_sde
from harness.errors import ParameterError
from harness.metrics import ode_error as ode_lib
from harness.metrics.metric import SuiteContext, TrialContext
from harness.models.oracle import ConditionalGaussianMixture
from harness.plugin.manager import get_sampler

WEIGHTS = torch.tensor([0.4, 0.35, 0.25], dtype=torch.float64)
MEANS = torch.tensor([[0.0, 0.5], [0.45, -0.3], [-0.45, -0.25]], dtype=torch.float64)
STDS = torch.tensor([[0.3, 0.25], [0.35, 0.3], [0.25, 0.35]], dtype=torch.float64)
N, SEED, W = 16, 3, 2.0


# --- the guided PF-ODE in closed form, from the formulas ----------------------------------
def _s_sigma(name, t):
    """s(t) and sigma(t) as tensors: VP (beta 0.1 .. 20) or EDM (s = 1, sigma = t)."""
    if name == "edm":
        return torch.ones_like(t), t
    integral = 0.1 * t + 0.5 * 19.9 * t * t
    return torch.exp(-0.5 * integral), torch.sqrt(torch.expm1(integral))


def _guided_score(name, x, t, labels, w):
    """grad_x [log p_t(x) + w (log p_t(x | c) - log p_t(x))] with
    p_t(x | c) = N(x; s mu_c, s^2 (v_c + sigma^2)) and p_t the mixture of them."""
    s, sigma = _s_sigma(name, t)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        var = s**2 * (STDS**2 + sigma**2)                                   # (K, D)
        log_n = -0.5 * ((x[:, None, :] - s * MEANS) ** 2 / var
                        + torch.log(2 * math.pi * var)).sum(-1)             # (B, K)
        log_u = torch.logsumexp(torch.log(WEIGHTS) + log_n, 1)
        log_c = log_n.gather(1, labels[:, None])[:, 0]
        (grad,) = torch.autograd.grad((log_u + w * (log_c - log_u)).sum(), x)
    return grad


def _guided_drift(name, labels, w):
    """dx/dt = (s'/s) x - s^2 sigma sigma' score (Karras et al. 2022, eq. 4): EDM
    -t score; VP -beta(t)/2 (x + score), as s^2 sigma sigma' = beta/2 there."""
    def drift(t, x):
        score = _guided_score(name, x, t, labels, w)
        if name == "edm":
            return -t * score
        return -0.5 * (0.1 + 19.9 * t) * (x + score)
    return drift


def _exact(name, x_T, labels, w):
    sde = make_sde(name)
    times = torch.tensor([sde.T, 0.0], dtype=torch.float64)
    # Steps land on t = 0 rather than overshoot it (sigma(t < 0) is NaN under VP).
    return odeint(_guided_drift(name, labels, w), x_T, times, rtol=1e-10, atol=1e-10,
                  method="dopri5", options={"step_t": times[1:]})[-1]


# --- a guided trial, as the runner builds it ---------------------------------------------
def _model(name):
    return ConditionalGaussianMixture(WEIGHTS, MEANS, STDS, make_sde(name))


def _suite(model, **options):
    return SuiteContext(model=model, model_name="cond", device="cpu", dtype=torch.float64,
                        options={"ode_error": options, "discrete_kl": {}})


def _guided_trial(suite, sampler, steps, w=W, rule="balanced", n=N):
    model = suite.model
    labels = sample_labels(SEED, range(n), model.num_classes, rule)
    grid = make_grid(model.sde, "karras", steps)
    sampler = get_sampler(sampler)
    params = sampler.make_params()
    samples = generate(GuidedModel(model, labels, w), sampler, grid, SEED, range(n), params)
    return TrialContext(suite=suite, sampler=sampler, params=params, grid=grid, seed=SEED,
                        samples=samples, labels=labels, guidance=w)


@pytest.mark.parametrize("sde_name", ["edm", "vp"])
def test_ode_error_of_heun_under_guidance_is_against_the_guided_flow(sde_name):
    model = _model(sde_name)
    suite = _suite(model)
    metric = plugin.ODEErrorMetric()
    labels = sample_labels(SEED, range(N), 3)
    x_T = ode_lib.initial_state(model, SEED, range(N), torch.float64)
    exact = _exact(sde_name, x_T, labels, W)
    unguided = _exact(sde_name, x_T, labels, 0.0)
    errors = []
    for steps in (4, 8, 16, 32):
        trial = _guided_trial(suite, "heun", steps)
        values = metric.compute(trial)
        expected = float((trial.samples - exact).pow(2).mean().sqrt())
        # The metric's reference ends at t_min with one Euler step (the guided drift is
        # 0/0 at sigma = 0); that step's own error is far below Heun's at these budgets.
        assert values["ode_error"] == pytest.approx(expected, rel=0.02), steps
        errors.append(values["ode_error"])
    # Measured against the unguided flow it would be far off: the reference matters.
    assert float((trial.samples - unguided).pow(2).mean().sqrt()) > 20 * errors[-1]
    assert metric.params()["ode_error_reference_model"].startswith("the guided model (w = 2")
    # Heun is second order: the error falls with the steps, by ~4x per doubling at the end.
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert 2.5 < errors[2] / errors[3] < 6.0, errors


def test_references_are_shared_within_a_scale_and_never_across_scales_or_labels(
        monkeypatch):
    model = _model("edm")
    suite = _suite(model, num_samples=6)
    solved = []
    real = plugin.reference_solve

    def counting(solve_model, x_T, **kw):
        solved.append((getattr(solve_model, "scale", None),
                       getattr(solve_model, "labels", torch.empty(0)).tolist()))
        return real(solve_model, x_T, **kw)

    monkeypatch.setattr(plugin, "reference_solve", counting)
    metric = plugin.ODEErrorMetric()
    first = metric.compute(_guided_trial(suite, "heun", 8, w=2.0))
    metric.compute(_guided_trial(suite, "euler", 12, w=2.0))  # same scale, same labels
    assert len(solved) == 1 and solved[0][0] == 2.0
    at_four = metric.compute(_guided_trial(suite, "heun", 8, w=4.0))
    assert len(solved) == 2 and solved[1][0] == 4.0
    # Other labels at the same scale: only the samples whose label changed are solved.
    metric.compute(_guided_trial(suite, "heun", 8, w=2.0, rule=[0]))
    balanced = sample_labels(SEED, range(6), 3).tolist()
    changed = [c for c in balanced if c != 0]
    assert len(solved) == 3 and solved[2] == (2.0, [0] * len(changed))
    # The unguided model's flow is a reference of its own (its model is not guided).
    plain = sampled_unguided(suite)
    metric.compute(plain)
    assert len(solved) == 4 and solved[3][0] is None
    # And each value is that of a fresh cache.
    fresh = plugin.ODEErrorMetric().compute(_guided_trial(_suite(model, num_samples=6),
                                                          "heun", 8, w=4.0))
    assert fresh["ode_error"] == at_four["ode_error"] != first["ode_error"]


def sampled_unguided(suite):
    sampler = get_sampler("heun")
    grid = make_grid(suite.model.sde, "karras", 8)
    samples = generate(suite.model, sampler, grid, SEED, range(N))
    return TrialContext(suite=suite, sampler=sampler, params=sampler.make_params(),
                        grid=grid, seed=SEED, samples=samples)


def test_a_guided_trial_without_labels_is_refused():
    suite = _suite(_model("edm"))
    trial = _guided_trial(suite, "heun", 4)
    trial.labels = None
    with pytest.raises(ParameterError, match="needs its samples' labels"):
        plugin.ODEErrorMetric().compute(trial)


def test_discrete_kl_gives_no_value_under_guidance_and_says_why():
    suite = _suite(_model("edm"))
    metric = plugin.DiscreteKLMetric()
    for w in (0.0, 1.0, 2.0):
        assert metric.compute(_guided_trial(suite, "heun", 6, w=w)) == {}
        status = metric.params()["discrete_kl_status"]
        assert status == plugin.GUIDED_STATUS and "guided" in status
    # The same model unguided still gets its number.
    values = metric.compute(sampled_unguided(suite))
    assert math.isfinite(values["discrete_kl"])
    assert metric.params()["discrete_kl_status"] == "ok"


def test_a_guided_suite_on_the_conditional_preset_measures_against_its_own_flow():
    """End to end through the runner: gmm-cond-2d at w = 1 and w = 3, labels from
    (seed, i), batches of 5: each trial's ode_error is the one of a trial built here with
    the same labels and scale, and differs between the scales."""
    from harness.models.oracle import overlapping_2d
    from harness.plugin.manager import get_plugins

    plugins = get_plugins()
    raw = {"model": "gmm-cond-2d", "model_options": {"sde": "edm"},
           "samplers": {"heun": {}}, "steps": [12], "num_samples": 12, "batch_size": 5,
           "device": "cpu", "dtype": "float64", "guidance": [1.0, 3.0], "seeds": [2],
           "metrics": {"ode_error": {}, "discrete_kl": {}}}
    suite = build_suite(raw, plugins)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    results = run_plan(plan, Sinks([]), quiet=True)
    assert [r.status for r in results] == [FINISHED, FINISHED], [r.error for r in results]
    here = _suite(overlapping_2d(make_sde("edm")))
    measured = {}
    for result in results:
        w = result.trial.guidance
        labels = sample_labels(2, range(12), 3)
        sampler = get_sampler("heun")
        grid = make_grid(here.model.sde, "karras", 12)
        samples = generate(GuidedModel(here.model, labels, w), sampler, grid, 2, range(12))
        trial = TrialContext(suite=here, sampler=sampler, params=sampler.make_params(),
                             grid=grid, seed=2, samples=samples, labels=labels, guidance=w)
        expected = plugin.ODEErrorMetric().compute(trial)["ode_error"]
        assert result.metrics["ode_error"] == pytest.approx(expected, rel=1e-6), w
        measured[w] = result.metrics["ode_error"]
        assert "discrete_kl" not in result.metrics
        assert result.params["discrete_kl_status"] == plugin.GUIDED_STATUS
    assert measured[1.0] != pytest.approx(measured[3.0], rel=0.05)
