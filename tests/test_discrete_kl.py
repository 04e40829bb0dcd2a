"""Exact KL of a sampler's own distribution: the linear-Gaussian closed form, normalisation
on the ring, non-invertible maps, the trained-model path and the bits/dim invariant."""

from __future__ import annotations

import math

import pytest
import torch

import harness_plugins.sampler_error_metrics as plugin
from harness.core.model import DataSpec, ReferenceData, ScoreModel
from harness.core.schedules import make_grid
from harness.core.sde import EDMSDE, VESDE, VPSDE
from harness.metrics.discrete_kl import (NotInvertibleError, discrete_kl,
                                         sampler_log_density)
from harness.metrics.likelihood import ode_nll
from harness.metrics.metric import SuiteContext
from harness.metrics.ode_error import initial_state
from harness.models.oracle import GaussianMixture, ring_2d
from harness.plugin.manager import get_plugins, get_sampler
from tests.metric_support import sampled_trial

MU = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
STD = 0.4


# --- linear Gaussian: every Euler / Heun step is affine, q_N is Gaussian ---------------------
# Process coefficients from their definitions: f = s'/s, g^2 = 2 s^2 sigma sigma'.
# VP: beta(t) = 0.1 + 19.9 t, s = exp(-B/2), sigma^2 = e^B - 1 => f = -beta/2, g^2 = beta.
# EDM: s = 1, sigma = t => f = 0, g^2 = 2t.

def _coefficients(name, t):
    if name == "vp":
        integral = 0.1 * t + 0.5 * 19.9 * t * t
        beta = 0.1 + 19.9 * t
        return math.exp(-0.5 * integral), math.sqrt(math.expm1(integral)), -beta / 2, beta
    return 1.0, t, 0.0, 2 * t


def _drift(name, t):
    """The PF-ODE drift f x - g^2/2 score for N(mu, v I) data, as (alpha, b): alpha x + b,
    with score(x) = -(x - s mu) / (s^2 (v + sigma^2))."""
    s, sigma, f, g2 = _coefficients(name, t)
    var = s * s * (STD**2 + sigma * sigma)
    return f + g2 / (2 * var), -g2 * s * MU / (2 * var)


def _closed_form_kl(name, sampler, grid):
    """KL(q_N || N(mu, v I)) with q_N = N(B, A^2 P^2 I) the affine image of the prior."""
    a_total, b_total = 1.0, torch.zeros(3, dtype=torch.float64)
    t = grid.t
    for i in range(grid.steps):
        h = t[i + 1] - t[i]
        alpha0, b0 = _drift(name, t[i])
        if sampler == "euler" or grid.sigma[i + 1] == 0:      # Heun's last step is Euler
            a, c = 1 + h * alpha0, h * b0
        else:
            alpha1, b1 = _drift(name, t[i + 1])
            a = 1 + h / 2 * (alpha0 + alpha1 * (1 + h * alpha0))
            c = h / 2 * (b0 + alpha1 * h * b0 + b1)
        a_total, b_total = a * a_total, a * b_total + c
    s_T, sigma_T, _, _ = _coefficients(name, t[0])
    var_q, var_p, dim = (a_total * s_T * sigma_T) ** 2, STD**2, 3
    return 0.5 * (dim * var_q / var_p + float((b_total - MU).pow(2).sum()) / var_p - dim
                  + dim * math.log(var_p / var_q))


@pytest.mark.parametrize("sde", [VPSDE(), EDMSDE()], ids=["vp", "edm"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [2, 4, 8, 32])
def test_kl_matches_the_linear_gaussian_closed_form(sde, sampler, steps):
    """The estimator is the mean of log q_N - log p_0 over the points given. Here that
    difference is a quadratic polynomial of x_T, and the 2D points +-sqrt(D) P e_i (equal
    weights) integrate every polynomial of degree <= 3 exactly against N(0, P^2 I): the
    mean over them is the expectation itself, so the comparison is exact."""
    model = GaussianMixture([1.0], MU[None], [STD], sde)
    grid = make_grid(sde, "karras", steps)
    eye = torch.eye(3, dtype=torch.float64)
    x_T = sde.prior_std * math.sqrt(3) * torch.cat([eye, -eye])
    density = sampler_log_density(model, get_sampler(sampler), grid, x_T)
    result = discrete_kl(density, lambda x: model.log_prob(x, 0.0))
    expected = _closed_form_kl(sde.name, sampler, grid)
    assert result.nats == pytest.approx(expected, rel=1e-6)
    assert result.bits_per_dim == pytest.approx(expected / (3 * math.log(2)), rel=1e-6)


# --- the 2-D ring: the densities the harness reports integrate to 1 ------------------------

def _cells(half_width=1.7, step=0.025):
    axis = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), step * step


def _invert(model, sampler, grid, x, iterations=30):
    """z with Phi_N(z) = x by Newton's method; Jacobians by reverse mode (independent of
    the forward mode the metric uses), start from the exact flow run backwards."""
    from torchdiffeq import odeint

    times = torch.tensor([0.0, model.sde.T], dtype=torch.float64)
    z = odeint(lambda t, y: model.ode_drift(y, t), x, times, rtol=1e-6, atol=1e-6,
               options={"step_t": times[1:]})[-1]
    params = sampler.make_params()
    for _ in range(iterations):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            out = sampler(model, z, grid, None, None, params)
            rows = [torch.autograd.grad(out[:, k].sum(), z, retain_graph=k == 0)[0]
                    for k in range(2)]
        jac = torch.stack(rows, dim=1)                         # (B, 2, 2): d out_k / d z
        residual = out.detach() - x
        if residual.abs().max() < 1e-10:
            break
        z = z.detach() - torch.linalg.solve(jac, residual)
    assert residual.abs().max() < 1e-9, "Newton did not converge"
    return z.detach()


@pytest.mark.parametrize("sampler, steps", [
    ("euler", 8), pytest.param("heun", 24, marks=pytest.mark.slow)])
def test_the_samplers_density_integrates_to_one_on_the_ring(sampler, steps):
    model = ring_2d(VPSDE())
    grid = make_grid(model.sde, "karras", steps)
    cells, area = _cells()
    z = _invert(model, get_sampler(sampler), grid, cells)
    density = sampler_log_density(model, get_sampler(sampler), grid, z)
    assert (density.x - cells).abs().max() < 1e-9
    mass = float(density.log_q.exp().sum() * area)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_the_models_pf_ode_density_integrates_to_one_on_the_ring():
    model = ring_2d(VPSDE())
    cells, area = _cells(step=0.025)
    result = ode_nll(model, cells, method="exact", rtol=1e-6, atol=1e-6)
    mass = float((-result.values[:, 0]).exp().sum() * area)
    assert mass == pytest.approx(1.0, abs=0.02)


# --- invertibility ----------------------------------------------------------------------------

def _suite(model, dtype=torch.float64, **options):
    return SuiteContext(model=model, model_name="m", device="cpu", dtype=dtype,
                        options={"discrete_kl": options})


def _trial(suite, name, steps, n=32, seed=0):
    return sampled_trial(suite, name, steps, n, seed)


def test_a_map_that_folds_space_is_not_invertible_and_gets_no_number():
    model = ring_2d(VESDE())
    x_T = model.sde.prior_std * torch.randn(64, 2, dtype=torch.float64,
                                            generator=torch.Generator().manual_seed(0))
    with pytest.raises(NotInvertibleError, match=r"not invertible at N = 5: .* changes sign"):
        sampler_log_density(model, get_sampler("heun"), make_grid(model.sde, "karras", 5),
                            x_T)
    metric = plugin.DiscreteKLMetric()
    suite = _suite(model, num_samples=64)
    announced = []
    suite.announce = announced.append  # what the runner shows the user
    assert metric.compute(_trial(suite, "heun", 5, n=64)) == {}
    assert metric.params()["discrete_kl_status"].startswith("not invertible at N = 5")
    assert any("not invertible at N = 5" in line for line in announced)
    # The same sampler on a finer grid is a bijection again, and gets its number.
    assert math.isfinite(metric.compute(_trial(suite, "heun", 32, n=64))["discrete_kl"])
    assert metric.params()["discrete_kl_status"] == "ok"


def test_a_reflection_is_invertible():
    """Euler on a Gaussian with one long step maps x to a x + c with a < 0: a bijection."""
    sde = VESDE()
    model = GaussianMixture([1.0], MU[None], [STD], sde)
    grid = make_grid(sde, "karras", 2)
    x_T = sde.prior_std * torch.randn(16, 3, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(3))
    density = sampler_log_density(model, get_sampler("euler"), grid, x_T)
    assert torch.isfinite(density.log_q).all()


# --- the metric ----------------------------------------------------------------------------

def test_kl_is_nonnegative_and_falls_to_zero_as_the_grid_refines():
    suite = _suite(ring_2d(VPSDE()), num_samples=256)
    metric = plugin.DiscreteKLMetric()
    values = [metric.compute(_trial(suite, "euler", n, n=256)) for n in (8, 16, 32, 64)]
    kls = [v["discrete_kl_nats"] for v in values]
    for v in values:
        assert v["discrete_kl_nats"] > -3 * v["discrete_kl_nats_stderr"]
        assert v["discrete_kl_nats_per_dim"] == pytest.approx(v["discrete_kl_nats"] / 2)
        assert v["discrete_kl"] == pytest.approx(v["discrete_kl_nats"] / (2 * math.log(2)))
    assert kls[0] > kls[1] > kls[2] > kls[3] and kls[3] < 0.05 * kls[0]
    assert metric.compute(_trial(suite, "euler_maruyama", 8, n=4)) == {}


class DenoiserOnly(ScoreModel):
    """The oracle seen only through its denoiser, as the harness sees a network; with
    `levels` its data are quantised (dequantised by the NLL)."""

    def __init__(self, oracle: GaussianMixture, levels=None):
        super().__init__(oracle.sde, DataSpec(oracle.data.shape, (-1.5, 1.5), levels))
        self.oracle = oracle

    def _denoise(self, x, sigma):
        return self.oracle._denoise(x, sigma)

    reference_splits = ("train", "test")

    def _reference_data(self, split, num, seed):
        """Oracle samples on the data's levels (what the NLL metric scores)."""
        generator = torch.Generator().manual_seed(seed + (split == "test"))
        data = self.oracle.sample_clean(num or 256, generator=generator)
        lo, hi = self.data.value_range
        width = self.data.bin_width
        data = (lo + ((data.clamp(lo, hi) - lo) / width).round() * width)
        return ReferenceData(f"quantised-ring:{split}:{num}:{seed}", data)


def test_on_a_trained_model_the_kl_is_taken_at_t_min_against_its_pf_ode_density():
    """A model that is not an oracle: p is its PF-ODE density (ode_nll) at t_min, where the
    sampler's state is read through its callback. Here the 'network' is an exact oracle,
    so ode_nll's density is the closed-form p_{t_min} (the prior at T = 80 matches p_T to
    ~1e-9): the KL must agree with the one computed from the closed form."""
    oracle = ring_2d(EDMSDE())
    model = DenoiserOnly(oracle)
    suite = _suite(model, num_samples=24)
    metric = plugin.DiscreteKLMetric()
    trial = _trial(suite, "heun", 12, n=24)
    values = metric.compute(trial)
    assert "t_min = 0.002" in metric.params()["discrete_kl_reference"]
    x_T = initial_state(model, 0, range(24), torch.float64)
    density = sampler_log_density(oracle, get_sampler("heun"), trial.grid, x_T,
                                  at_time=trial.grid.t[-2])
    closed = discrete_kl(density, lambda x: oracle.log_prob(x, model.sde.t_min))
    assert values["discrete_kl_nats"] == pytest.approx(closed.nats, abs=2e-3)
    assert values["discrete_kl_nats"] > -3 * values["discrete_kl_nats_stderr"]


def test_no_reported_bits_per_dim_is_negative_on_dequantised_data():
    """Every built-in metric in bits/dim, on a model of quantised data: the model's NLL of
    dequantised data is >= 0 (a density's bits/dim of dequantised data bounds a discrete
    NLL from above); a KL is >= 0 up to its stated Monte-Carlo error."""
    model = DenoiserOnly(ring_2d(EDMSDE()), levels=13)
    registry = get_plugins().metrics
    suite = SuiteContext(model=model, model_name="quantised-ring", device="cpu",
                         dtype=torch.float64,
                         options={"nll": {"num_points": 64, "num_probes": 2},
                                  "discrete_kl": {"num_samples": 16}})
    checked = 0
    for name in ("nll", "discrete_kl"):
        metric = registry.get(name)
        assert metric.unit == "bits/dim" and metric.applies_to(suite)
        metric.prepare(suite)
        for sampler, steps in (("euler", 6), ("heun", 16)):
            values = metric.compute(_trial(suite, sampler, steps, n=64))
            stderr = values[f"{name}_stderr"] if name == "discrete_kl" else 0.0
            assert values[name] >= -3 * stderr, (name, sampler, values)
            checked += 1
    assert checked == 4


def test_the_report_plots_the_errors_and_says_why_a_kl_is_missing(tmp_path):
    import pandas as pd

    from harness.bench.reporting.report import Results, records_from_runs, write_report

    def record(sampler, steps, seed, metrics, status="ok"):
        return {"kind": "trial", "status": "FINISHED", "sampler": sampler, "variant": "",
                "steps": steps, "seed": seed, "name": f"{sampler}-{steps}-seed{seed}",
                "config_hash": f"{sampler}{steps}{seed}", "num_samples": 8,
                "ended": float(steps + seed), "metrics": {"nfe": float(steps), **metrics},
                "measured_params": {"discrete_kl_status": status}}

    folded = "not invertible at N = 4: the Jacobian determinant changes sign after step 2"
    records = [record("heun", 4, 0, {"ode_error": 0.3}, folded)]
    records += [record(name, n, seed, {"ode_error": 1.0 / n, "discrete_kl": 2.0 / n})
                for name in ("euler", "heun") for n in (8, 16) for seed in (0, 1)]
    written = write_report(Results(records), tmp_path)
    assert {"ode_error_vs_nfe.png", "discrete_kl_vs_nfe.png"} <= set(written.files)
    page = (tmp_path / "leaderboard.md").read_text()
    assert page.splitlines()[0] == "| sampler | steps | seeds | ode_error | discrete_kl | nfe |"
    assert f"- heun-4-seed0: discrete_kl: {folded}" in page
    # From MLflow: the reason comes back as the run's parameter.
    runs = pd.DataFrame([{"tags.harness.kind": "trial", "status": "FINISHED",
                          "tags.mlflow.runName": "heun-4-seed0", "params.sampler": "heun",
                          "params.steps": "4", "params.seed": "0", "metrics.nfe": 4.0,
                          "params.discrete_kl_status": folded, "start_time": 0,
                          "end_time": 0}])
    assert records_from_runs(runs).records[0]["measured_params"] == {
        "discrete_kl_status": folded}
