"""ODE discretisation error: the reference against the closed-form Gaussian PF-ODE, the
metric against an exact Euler error, shared references, and what it refuses."""

from __future__ import annotations

import math

import pytest
import torch

import harness_plugins.sampler_error_metrics as plugin
from harness.core.model import DataSpec, ScoreModel
from harness.core.sampler import Capabilities, Sampler
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import EDMSDE, VESDE, VPSDE, SubVPSDE
from harness.errors import ParameterError
from harness.metrics import ode_error as ode_lib
from harness.metrics.metric import SuiteContext
from harness.models.oracle import GaussianMixture, ring_2d
from tests.metric_support import sampled_trial

MU = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
STD = 0.4


# --- the Gaussian PF-ODE in closed form, written from the formulas ------------------------
# For data N(mu, v I) the unscaled state y = x / s(t) of the PF-ODE obeys
# dy/dsigma = (y - mu) sigma / (v + sigma^2), so y(t) - mu = (y_T - mu) sqrt((v + sigma(t)^2)
# / (v + sigma(T)^2)). s and sigma per process (Song et al. 2021; Karras et al. 2022).

def _vp_integral(t):
    return 0.1 * t + 0.5 * (20.0 - 0.1) * t * t


def _s_sigma(name, t):
    if name == "vp":
        return math.exp(-0.5 * _vp_integral(t)), math.sqrt(math.expm1(_vp_integral(t)))
    if name == "subvp":
        alpha = math.exp(-0.5 * _vp_integral(t))
        return alpha, (1 - alpha**2) / alpha
    if name == "ve":
        return 1.0, 0.01 * (50.0 / 0.01) ** t
    return 1.0, t  # edm


def _exact_flow(name, x_T, T, t):
    s_T, sigma_T = _s_sigma(name, T)
    s_t, sigma_t = _s_sigma(name, t)
    v = STD**2
    y_T = x_T / s_T
    return s_t * (MU + (y_T - MU) * math.sqrt((v + sigma_t**2) / (v + sigma_T**2)))


def _gaussian(sde):
    return GaussianMixture([1.0], MU[None], [STD], sde)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), EDMSDE()],
                         ids=["vp", "subvp", "ve", "edm"])
def test_reference_matches_the_closed_form_gaussian_flow(sde):
    model = _gaussian(sde)
    x_T = sde.prior_std * torch.randn(16, 3, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(0))
    solution = ode_lib.reference_solve(model, x_T)
    exact = _exact_flow(sde.name, x_T, sde.T, 0.0)
    assert solution.end == ode_lib.END_EXACT
    # dopri5 at rtol = atol = 1e-7: the reference is exact to ~1e-7 of the data's scale.
    assert (solution.x - exact).abs().max() < 1e-6
    assert solution.nfe > 50 and solution.rtol == solution.atol == 1e-7


class DenoiserOnly(ScoreModel):
    """The Gaussian oracle seen only through its denoiser, as a network is: the default
    score (s D - x) / (s sigma)^2 is 0/0 at sigma = 0, so the drift is NaN at t = 0."""

    def __init__(self, oracle: GaussianMixture, levels=None):
        super().__init__(oracle.sde, DataSpec(oracle.data.shape, (-1.0, 1.0), levels))
        self.oracle = oracle

    def _denoise(self, x, sigma):
        return self.oracle._denoise(x, sigma)


def test_a_drift_undefined_at_zero_ends_with_one_euler_step_from_t_min():
    sde = EDMSDE()
    model = DenoiserOnly(_gaussian(sde))
    x_T = sde.prior_std * torch.randn(8, 3, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(1))
    solution = ode_lib.reference_solve(model, x_T)
    assert solution.end == ode_lib.END_EULER
    at_t_min = _exact_flow("edm", x_T, sde.T, sde.t_min)
    # On EDM an Euler step to sigma = 0 is the denoiser: mu + v / (v + sigma^2) (x - mu).
    v = STD**2
    expected = MU + v / (v + sde.t_min**2) * (at_t_min - MU)
    assert (solution.x - expected).abs().max() < 1e-6


def test_initial_state_is_what_the_sampling_loop_starts_from():
    model = ring_2d(VPSDE())
    passthrough = Sampler(name="passthrough", fn=lambda m, x, g, n, c, p: x,
                          capabilities=Capabilities(stochastic=False, order=1))
    grid = make_grid(model.sde, "karras", 3)
    for dtype in (torch.float32, torch.float64):
        drawn = generate(model, passthrough, grid, 7, [4, 0, 9], dtype=dtype)
        assert torch.equal(ode_lib.initial_state(model, 7, [4, 0, 9], dtype), drawn)


def _suite(model, dtype=torch.float64, **options):
    return SuiteContext(model=model, model_name="m", device="cpu", dtype=dtype,
                        options={"ode_error": options})


def _trial(suite, name, steps, n=12, seed=0):
    return sampled_trial(suite, name, steps, n, seed)


@pytest.mark.parametrize("steps", [2, 5])
def test_metric_equals_the_exact_error_of_euler_on_gaussian_data(steps):
    """Euler on Gaussian data is affine per step: its output and its error are exact."""
    sde = EDMSDE()
    suite = _suite(_gaussian(sde))
    trial = _trial(suite, "euler", steps)
    x_T = ode_lib.initial_state(suite.model, 0, range(12), torch.float64)
    # Euler on EDM: x <- x + (t' - t) (x - D(x; t)) / t, D(x; t) = mu + v/(v + t^2)(x - mu).
    v, t, x = STD**2, make_grid(sde, "karras", steps).t, x_T.clone()
    for i in range(steps):
        denoised = MU + v / (v + t[i] ** 2) * (x - MU)
        x = x + (t[i + 1] - t[i]) * (x - denoised) / t[i]
    exact = _exact_flow("edm", x_T, sde.T, 0.0)
    expected = float((x - exact).pow(2).mean().sqrt())
    values = plugin.ODEErrorMetric().compute(trial)
    assert values["ode_error"] == pytest.approx(expected, rel=1e-5)
    assert values["ode_error_num_samples"] == 12 and values["ode_error_stderr"] > 0


def test_error_falls_with_the_step_count_at_each_samplers_order():
    suite = _suite(ring_2d(VPSDE()), num_samples=16)
    metric = plugin.ODEErrorMetric()
    errors = {(name, n): metric.compute(_trial(suite, name, n, n=16))["ode_error"]
              for name in ("euler", "heun") for n in (32, 64)}
    # Halving the step: ~2x less error for Euler (order 1), ~4x for Heun (order 2).
    assert 1.6 < errors["euler", 32] / errors["euler", 64] < 2.5
    assert 3.0 < errors["heun", 32] / errors["heun", 64] < 5.0
    assert errors["heun", 64] < errors["euler", 64] / 10


def test_references_are_solved_once_per_seed_and_reused(monkeypatch):
    suite = _suite(ring_2d(EDMSDE()), num_samples=6)
    solved = []
    original = ode_lib.reference_solve

    def counting(model, x_T, **kwargs):
        solved.append(x_T.shape[0])
        return original(model, x_T, **kwargs)

    monkeypatch.setattr(plugin, "reference_solve", counting)   # the name the plugin calls
    metric = plugin.ODEErrorMetric()
    trials = [_trial(suite, name, steps, n=6, seed=seed)
              for name, steps, seed in (("euler", 4, 0), ("heun", 8, 0), ("euler", 16, 0),
                                        ("heun", 4, 1))]
    for trial in trials[:3]:
        metric.compute(trial)
    assert solved == [6]                                  # one solve for three trials
    metric.compute(trials[3])
    assert solved == [6, 6]                               # another seed, other noise
    assert metric.params()["ode_error_reference_end"] == ode_lib.END_EXACT


def _counting_solves(monkeypatch) -> list[int]:
    solved: list[int] = []
    original = ode_lib.reference_solve

    def counting(model, x_T, **kwargs):
        solved.append(x_T.shape[0])
        return original(model, x_T, **kwargs)

    monkeypatch.setattr(plugin, "reference_solve", counting)   # the name the plugin calls
    return solved


def test_references_are_kept_on_disk_for_later_runs_and_only_for_the_same_flow(
        monkeypatch, tmp_path):
    solved = _counting_solves(monkeypatch)
    store = str(tmp_path / "store")

    def run(model=None, seed=0, **options):
        # A new suite context: nothing in memory, as in a later `harness run`.
        suite = _suite(model or ring_2d(EDMSDE()), num_samples=6, cache_dir=store, **options)
        return plugin.ODEErrorMetric().compute(_trial(suite, "heun", 4, n=6, seed=seed))

    first = run()
    assert solved == [6] and list((tmp_path / "store" / "ode_error").glob("*.pt"))
    assert run() == first and solved == [6]                # read back, value for value
    run(seed=1)                                            # other initial noise
    run(rtol=1e-6)                                         # another tolerance
    run(model=ring_2d(VPSDE()))                            # another process
    moved = ring_2d(EDMSDE())
    moved.means.add_(1e-3)                                 # the same model, other weights
    run(model=moved)
    run(cache=False)                                       # asked not to use the store
    assert solved == [6] * 6


def test_a_damaged_store_is_solved_again_with_a_warning(monkeypatch, tmp_path):
    solved = _counting_solves(monkeypatch)
    suite = _suite(ring_2d(EDMSDE()), num_samples=4, cache_dir=str(tmp_path))
    first = plugin.ODEErrorMetric().compute(_trial(suite, "euler", 4, n=4))
    (path,) = (tmp_path / "ode_error").glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])              # torn by a crash mid-write
    suite = _suite(ring_2d(EDMSDE()), num_samples=4, cache_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match="unreadable.*solving again"):
        again = plugin.ODEErrorMetric().compute(_trial(suite, "euler", 4, n=4))
    assert again == first and solved == [4, 4]


def test_the_solve_is_announced_before_it_starts_and_when_it_ends(tmp_path):
    lines: list[str] = []
    suite = _suite(ring_2d(EDMSDE()), num_samples=5, cache_dir=str(tmp_path))
    suite.announce = lines.append
    metric = plugin.ODEErrorMetric()
    metric.compute(_trial(suite, "euler", 4, n=5))
    assert len(lines) == 2
    assert lines[0].startswith("ode_error: solving the PF-ODE from 5 initial states of "
                               "seed 0 (dopri5, rtol = 1e-07, atol = 1e-07, float64)")
    assert lines[0].endswith("kept on disk for later runs")
    assert lines[1].startswith("ode_error: 5 references solved in ")
    metric.compute(_trial(suite, "heun", 4, n=5))
    assert len(lines) == 2                                 # nothing new to solve


def test_stochastic_samplers_get_no_value_and_options_are_checked():
    suite = _suite(ring_2d(VPSDE()))
    metric = plugin.ODEErrorMetric()
    assert metric.compute(_trial(suite, "euler_maruyama", 4, n=4)) == {}
    with pytest.raises(ParameterError, match="unknown option.*known: num_samples"):
        metric.prepare(_suite(ring_2d(VPSDE()), tolerance=1e-3))
    with pytest.raises(ParameterError, match="num_samples must be an integer >= 2"):
        metric.prepare(_suite(ring_2d(VPSDE()), num_samples=1))
    with pytest.raises(ParameterError, match="rtol and atol"):
        ode_lib.reference_solve(suite.model, torch.zeros(1, 2), rtol=0.0)
