"""The diffusers adapter: what it registers, its NFE, noise, params, tables and network.

Its parity with diffusers' own loop is tests/test_diffusers_parity.py; the conformance
kit's verdicts on every registration, tests/test_diffusers_kit.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from harness_plugins import diffusers_schedulers
from harness_plugins.diffusers_schedulers import NOT_ADAPTED

from harness import CountedModel, ParameterError, generate, make_grid
from harness.core.schedules import TimeGrid
from harness.core.sde import EDMSDE, VESDE, VPSDE, SubVPSDE
from harness.models.diffusers_model import DiscreteVPSDE
from harness.models.oracle import mixture_64d
from harness.plugin.manager import get_plugins

from .bench_support import bench_environment, harness
from .test_nfe_counting import _model as counting_model

diffusers = pytest.importorskip("diffusers")

#: diffusers calls NumPy on tensors inside its steps (NumPy 2 deprecations, thousands per
#: run), and torchsde notes every Brownian-tree query a float32 rounding puts outside its
#: interval: the library's own noise, filtered here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore:Should have:UserWarning")

#: Every registration of diffusers 0.42: a class, or a class and its noisy twin.
REGISTERED = {
    "CogVideoXDDIMScheduler", "CosineDPMSolverMultistepScheduler", "DDIMParallelScheduler",
    "DDIMParallelScheduler_eta", "DDIMScheduler", "DDIMScheduler_eta",
    "DDPMParallelScheduler", "DDPMScheduler", "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler_sde",
    "DPMSolverSDEScheduler", "DPMSolverSinglestepScheduler",
    "DPMSolverSinglestepScheduler_sde", "EDMDPMSolverMultistepScheduler",
    "EDMDPMSolverMultistepScheduler_sde", "EDMEulerScheduler", "EDMEulerScheduler_churn",
    "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerDiscreteScheduler_churn", "HeunDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "KDPM2DiscreteScheduler", "LCMScheduler",
    "LMSDiscreteScheduler", "PNDMScheduler", "SASolverScheduler", "TCDScheduler",
    "UniPCMultistepScheduler",
}
#: The stochastic registrations (noise at their defaults).
STOCHASTIC = {
    "CosineDPMSolverMultistepScheduler", "DDIMParallelScheduler_eta", "DDIMScheduler_eta",
    "DDPMParallelScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler_sde",
    "DPMSolverSDEScheduler", "DPMSolverSinglestepScheduler_sde",
    "EDMDPMSolverMultistepScheduler_sde", "EDMEulerScheduler_churn",
    "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler_churn",
    "KDPM2AncestralDiscreteScheduler", "LCMScheduler", "SASolverScheduler", "TCDScheduler",
}


def registered() -> list[str]:
    return [n for n in get_plugins().samplers.names() if n.startswith("diffusers:")]


def sampler(name: str):
    return get_plugins().samplers.get(name)


def test_every_scheduler_diffusers_exports_is_registered_or_said_why_not(plugins):
    assert {n.removeprefix("diffusers:") for n in registered()} == REGISTERED
    for name in registered():
        assert sampler(name).capabilities.stochastic == (name[10:] in STOCHASTIC), name
    exported = {n for n in dir(diffusers) if n.endswith("Scheduler")}
    adapted = {n.split("_")[0] for n in REGISTERED}
    assert set(NOT_ADAPTED) == exported - adapted
    assert all(len(why) > 20 for why in NOT_ADAPTED.values())
    assert "flow-matching" in NOT_ADAPTED["FlowMatchEulerDiscreteScheduler"]
    assert "predictor-corrector" in NOT_ADAPTED["ScoreSdeVeScheduler"]
    assert "placeholder" in NOT_ADAPTED["KarrasVeScheduler"]


def test_a_class_new_to_the_adapter_is_listed_not_guessed_at():
    class NewScheduler:  # what a later diffusers might add
        pass

    assert diffusers_schedulers.adapted("NewScheduler", NewScheduler, "9.9") == []
    assert NOT_ADAPTED.pop("NewScheduler").startswith("new in diffusers 9.9")


# --- NFE ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_counted_nfe_equals_network_calls_and_the_declared_nfe(name):
    """At 3, 7 and 12 steps, on grids ending at sigma = 0 (VP) and above it (VE)."""
    entry = sampler(f"diffusers:{name}")
    params = entry.make_params()
    for sde in (VPSDE(), VESDE()):
        for steps in (3, 7, 12):
            if name == "PNDMScheduler" and steps < 4:   # its Runge-Kutta warm-up
                with pytest.raises(ParameterError, match="cannot run 3 step"):
                    entry.expected_nfe(steps, params)
                continue
            model, network = counting_model(sde)
            counted = CountedModel(model)
            grid = make_grid(sde, "karras", steps)
            out = generate(counted, entry, grid, seed=0, indices=range(3), params=params)
            assert torch.isfinite(out).all()
            assert counted.nfe.calls == network.calls and counted.nfe.rows == network.rows
            expected = entry.expected_nfe(steps, params, grid.sigma[-1] == 0)
            assert counted.nfe.per_sample(3) == expected, (sde, steps)


def test_nfe_follows_the_schedulers_own_timesteps():
    heun = sampler("diffusers:HeunDiscreteScheduler")
    pndm = sampler("diffusers:PNDMScheduler")
    assert [heun.expected_nfe(n, heun.make_params()) for n in (1, 6, 10)] == [1, 11, 19]
    assert heun.capabilities.to_dict(heun.make_params())["final_step_nfe"] == 1
    assert [pndm.expected_nfe(n, pndm.make_params()) for n in (4, 6, 20)] == [13, 15, 29]
    skip = pndm.make_params({"skip_prk_steps": True})
    assert [pndm.expected_nfe(n, skip) for n in (1, 6, 20)] == [1, 7, 21]
    dpm = sampler("diffusers:DPMSolverMultistepScheduler")
    assert dpm.expected_nfe(10, dpm.make_params({"solver_order": 3})) == 10


# --- noise --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_a_sample_does_not_depend_on_its_batch(name):
    """Sample 3 of a batch of 5 is bit for bit the sample generated alone (CPU), on a
    model whose denoiser is elementwise (the mixture oracle's matrix products round
    differently for 1 and 5 rows, by ~3e-16)."""
    model, _ = counting_model(VPSDE(), dim=64)
    entry = sampler(f"diffusers:{name}")
    grid = make_grid(model.sde, "karras", 6)
    batch = generate(model, entry, grid, seed=11, indices=range(5))
    alone = generate(model, entry, grid, seed=11, indices=[3])
    assert torch.equal(batch[3], alone[0])
    other_seed = generate(model, entry, grid, seed=12, indices=[3])
    assert not torch.equal(other_seed[0], alone[0])  # the noise comes from the stream


# --- params -------------------------------------------------------------------------------

def refusal(name: str, values: dict) -> str:
    with pytest.raises(ParameterError) as info:
        sampler(name).make_params(values)
    return str(info.value)


def test_a_typo_is_refused_with_the_valid_names():
    message = refusal("diffusers:DPMSolverMultistepScheduler", {"solver_ordr": 3})
    assert "solver_ordr" in message and "Did you mean 'solver_order'" in message


@pytest.mark.parametrize("name, key, value, fragment", [
    ("DDIMScheduler", "trained_betas", [0.1], "computed from the model's process"),
    ("DDIMScheduler", "beta_schedule", "linear", "training table is the model's process"),
    ("DDIMScheduler", "eta", 1.0, "diffusers:DDIMScheduler_eta sets it"),
    ("EulerDiscreteScheduler", "s_noise", 1.0, "diffusers:EulerDiscreteScheduler_churn"),
    ("DDPMScheduler", "generator", None, "harness noise stream"),
    ("EDMEulerScheduler", "sigma_max", 80.0, "the model's sigma(T)"),
    ("DPMSolverMultistepScheduler", "use_flow_sigmas", True, "rectified flow"),
    ("DPMSolverSDEScheduler", "noise_sampler_seed", 0, "harness noise stream"),
    ("CogVideoXDDIMScheduler", "eta", 1.0, "step() never reads it"),
    ("UniPCMultistepScheduler", "disable_corrector", [1], "cannot be set from a suite"),
])
def test_what_the_harness_sets_is_refused_with_the_reason(name, key, value, fragment):
    assert fragment in refusal(f"diffusers:{name}", {key: value})


@pytest.mark.parametrize("name, values, fragment", [
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
     "diffusers:DPMSolverMultistepScheduler_sde is the stochastic registration"),
    ("DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction"},
     "flow-matching model's output"),
    ("DDPMScheduler", {"variance_type": "learned_range"}, "predicts its own variance"),
    ("DDIMScheduler", {"timestep_spacing": "uniform"}, "timestep_spacing"),
    ("DDIMScheduler", {"noise": "per-sample"}, "noise"),
])
def test_values_no_harness_model_can_serve_are_refused(name, values, fragment):
    assert fragment in refusal(f"diffusers:{name}", values)


def test_settings_reach_the_scheduler_and_markers_are_logged():
    entry = sampler("diffusers:DPMSolverMultistepScheduler_sde")
    params = entry.make_params({"solver_order": 3})
    assert params.algorithm_type == "sde-dpmsolver++"  # this registration's default
    logged = params.to_dict()
    assert logged["noise"] == "per-sample" and logged["training_table"].startswith("model")
    scheduler = entry.fn.scheduler(params, VPSDE())
    assert scheduler.config.solver_order == 3
    assert scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert sampler("diffusers:EulerAncestralDiscreteScheduler").make_params().noise == \
        "per-sample-seeded"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def test_a_suite_with_a_typo_fails_before_any_model_loads(bench, tmp_path, capsys,
                                                           monkeypatch):
    import harness.commands.run as run_command

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run_command, "load_model", no_model)
    suite = tmp_path / "typo.toml"
    suite.write_text(textwrap.dedent("""
        model = "gmm-ring-2d"
        steps = [4]
        num_samples = 8
        [samplers."diffusers:DPMSolverMultistepScheduler"]
        params = { solver_ordr = 3 }
    """))
    assert harness("run", str(suite), "--dry-run") == 2
    error = capsys.readouterr().err
    assert "solver_ordr" in error and "Did you mean 'solver_order'" in error


def test_a_suite_that_runs_pndm_too_short_fails_before_any_model_loads(
        bench, tmp_path, capsys, monkeypatch):
    import harness.commands.run as run_command

    monkeypatch.setattr(run_command, "load_model", lambda *a, **k: pytest.fail("loaded"))
    suite = tmp_path / "short.toml"
    suite.write_text('model = "gmm-ring-2d"\nsteps = [3]\nnum_samples = 8\n'
                     '[samplers."diffusers:PNDMScheduler"]\n')
    assert harness("run", str(suite), "--dry-run") != 0
    assert "cannot run 3 step(s)" in capsys.readouterr().err


# --- the training table -------------------------------------------------------------------

def test_a_diffusers_model_gets_its_own_table_bit_for_bit():
    for config in ({}, {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 200},
                   {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                    "beta_end": 0.012}):
        table = diffusers.DDPMScheduler(**config).alphas_cumprod
        for name in ("DDIMScheduler", "EulerDiscreteScheduler", "UniPCMultistepScheduler"):
            entry = sampler(f"diffusers:{name}")
            built = entry.fn.scheduler(entry.make_params(), DiscreteVPSDE(table))
            assert torch.equal(built.alphas_cumprod, table), (config, name)


@pytest.mark.parametrize("sde, lowest", [(VPSDE(), None), (VESDE(), None),
                                         (EDMSDE(), None), (SubVPSDE(), 0.002)])
def test_a_continuous_process_gets_log_uniform_levels_over_its_range(sde, lowest):
    """1000 levels, ln(sigma) evenly spaced from sigma(t_min) (sub-VP: from 0.002, which
    float32 can hold) to sigma(T), alpha_bar = 1 / (1 + sigma^2), rounded to float32."""
    entry = sampler("diffusers:DDIMScheduler")
    built = entry.fn.scheduler(entry.make_params(), sde)
    low = math.log(lowest or float(sde.sigma(sde.t_min)))
    high = math.log(float(sde.sigma(sde.T)))
    sigma = torch.exp(torch.linspace(low, high, 1000, dtype=torch.float64))
    assert torch.equal(built.alphas_cumprod, (1 / (1 + sigma**2)).float())


def test_the_edm_schedulers_get_the_models_sigma_range():
    entry = sampler("diffusers:EDMEulerScheduler")
    built = entry.fn.scheduler(entry.make_params(), VESDE(sigma_min=0.01, sigma_max=50.0))
    assert built.config.sigma_min == pytest.approx(VESDE().sigma(1e-5), rel=1e-12)
    assert built.config.sigma_max == pytest.approx(50.0, rel=1e-12)


# --- the network: the scheduler reconstructs the model's denoiser ------------------------

#: Where each scheduler shows its own clean-sample estimate: a `step` output field, or
#: what `convert_model_output` returns (the data-prediction solvers).
ESTIMATE = {
    **dict.fromkeys(
        ("DDIMScheduler", "DDIMParallelScheduler", "CogVideoXDDIMScheduler",
         "DDPMScheduler", "DDPMParallelScheduler", "EulerDiscreteScheduler",
         "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
         "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
         "DPMSolverSDEScheduler", "EDMEulerScheduler"), "pred_original_sample"),
    "LCMScheduler": "denoised",
    **dict.fromkeys(
        ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
         "UniPCMultistepScheduler", "SASolverScheduler", "EDMDPMSolverMultistepScheduler",
         "CosineDPMSolverMultistepScheduler"), "convert_model_output"),
}
#: float32 levels and coefficients, the cancellation in x_0 = (x_t - sigma eps) / alpha
#: at sigma ~ 150 included: up to 2.2e-5 (LCMScheduler, epsilon, on an AVX-512 Xeon). A
#: wrong parametrisation or sign is off by order 1.
ESTIMATE_RTOL = 1e-4


@pytest.mark.parametrize("name", sorted(ESTIMATE))
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_each_scheduler_reconstructs_the_models_denoiser(name, prediction, monkeypatch):
    """At every call, the scheduler's own x_0 estimate from the adapter's prediction is
    the oracle's D at that call (EDM: epsilon and v select the sign of c_out)."""
    model = mixture_64d(VPSDE())
    given, estimates = [], []
    denoise = model._denoise

    def recorded_denoise(x, sigma):
        given.append(denoise(x, sigma))
        return given[-1]

    monkeypatch.setattr(model, "_denoise", recorded_denoise)
    scheduler_class = getattr(diffusers, name)
    where = ESTIMATE[name]
    method = "step" if where != "convert_model_output" else where
    original = getattr(scheduler_class, method)

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        estimates.append(result if method == where else getattr(result, where))
        return result

    monkeypatch.setattr(scheduler_class, method, recording)
    entry = sampler(f"diffusers:{name}")
    settings = {k: v for k, v in {"clip_sample": False, "prediction_type": prediction}
                .items() if k in entry.params.__dataclass_fields__}
    generate(model, entry, make_grid(model.sde, "karras", 8), 0, range(4),
             entry.make_params(settings))
    assert len(estimates) == len(given) >= 8
    for d, estimate in zip(given, estimates):
        assert float((estimate - d).abs().max()) <= ESTIMATE_RTOL * float(d.abs().max())


def test_the_callback_reports_each_step_in_the_harness_variable():
    model = mixture_64d(VPSDE())
    seen = []
    entry = sampler("diffusers:HeunDiscreteScheduler")
    out = generate(model, entry, make_grid(model.sde, "karras", 6), 0, range(2),
                   callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6))
    times = [d["t"] for d in seen]
    assert times == sorted(times, reverse=True) and times[-1] == 0.0
    assert torch.equal(seen[-1]["x"], out)
    # Each state sits at its level: x = s(t) u, with u = x_0 + sigma n of variance
    # about (data variance + sigma^2) per dimension at the first, noisiest, one.
    first = seen[0]
    sigma, scale = model.sde.sigma(first["t"]), model.sde.scale(first["t"])
    assert float((first["x"] / scale).std()) == pytest.approx(sigma, rel=0.3)


def test_the_grids_end_and_schedule_do_not_change_the_run():
    model = mixture_64d(VPSDE())
    entry = sampler("diffusers:UniPCMultistepScheduler")
    karras = make_grid(model.sde, "karras", 6)
    other = TimeGrid(karras.t[:-1], karras.sigma[:-1], karras.scale[:-1])
    a = generate(model, entry, karras, 0, range(2))
    b = generate(model, entry, make_grid(model.sde, "uniform_t", 6), 0, range(2))
    c = generate(model, entry, other, 0, range(2))  # 5 steps
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_levels_are_the_noise_levels_a_run_visits():
    """What a plan can show: DDIM's "leading" timesteps 750, 500, 250, 0 of the 1000
    log-uniform levels over EDM's [0.002, 80] start far below sigma_max; Heun's
    "linspace" ones start at it, each level after the first called twice."""
    sde = EDMSDE()
    ddim = sampler("diffusers:DDIMScheduler")
    expected = [0.002 * 40000 ** (n / 999) for n in (750, 500, 250, 0)]
    assert ddim.fn.levels(ddim.make_params(), sde, 4) == pytest.approx(expected, rel=1e-2)
    heun = sampler("diffusers:HeunDiscreteScheduler")
    levels = heun.fn.levels(heun.make_params(), sde, 4)
    assert len(levels) == 7 and levels[0] == pytest.approx(80.0, rel=1e-6)
    assert levels[1::2] == levels[2::2] and levels[-1] == pytest.approx(0.002, rel=1e-2)


# --- without diffusers --------------------------------------------------------------------

HIDE_DIFFUSERS = """
import importlib.abc, json, sys

class Hidden(importlib.abc.MetaPathFinder):
    # Asks the usual finders, except for diffusers: as if it were not installed.
    # (Distributions are still listed: entry points are found through them.)
    def __init__(self, finders):
        self.finders = finders
    def find_spec(self, name, path=None, target=None):
        if name == "diffusers" or name.startswith("diffusers."):
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None
    def find_distributions(self, *args, **kwargs):
        for finder in self.finders:
            yield from getattr(finder, "find_distributions", lambda *a, **k: ())(
                *args, **kwargs)

sys.meta_path[:] = [Hidden(list(sys.meta_path))]
from harness.plugin.manager import get_plugins
loaded = get_plugins()
import harness_plugins.diffusers_schedulers as adapter
print(json.dumps({
    "failures": [str(f) for f in loaded.failures],
    "diffusers": [n for n in loaded.samplers.names() if n.startswith("diffusers:")],
    "builtins": "ddim" in loaded.samplers.names(),
    "not_adapted": len(adapter.NOT_ADAPTED),
    "imported": "diffusers" in sys.modules,
}))
"""


def test_without_diffusers_nothing_is_registered_and_nothing_fails():
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", HIDE_DIFFUSERS], capture_output=True,
                          check=False, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"failures": [], "diffusers": [], "builtins": True, "not_adapted": 0,
                      "imported": False}
    assert "diffusers" not in done.stderr.lower()
