"""The k-diffusion adapter (`kdiffusion:<name>`): k-diffusion's own functions, called by
hand here with the same denoiser, sigmas and noise, give the adapter's samples; the NFE
the model counts is the calls a counting network sees and what the sampler declares;
per-sample noise makes a sample independent of its batch; bad parameters are refused
before any model loads; and without k-diffusion the harness runs as before.

Everything but the last runs only where k-diffusion is installed (its tests skip or
have no cases otherwise). The conformance kit's verdicts are pinned in
tests/test_kdiffusion_kit.py.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from harness_plugins import kdiffusion_loading, kdiffusion_samplers

from harness import CountedModel, ParameterError, generate, make_grid
from harness.core.model import DataSpec, NetworkScoreModel
from harness.core.noise import SampleNoise
from harness.core.schedules import TimeGrid
from harness.core.sde import VPSDE, make_sde
from harness.models.oracle import mixture_64d
from harness.plugin.manager import get_plugins

from .bench_support import harness
from .reference_support import (
    PROCESSES,
    Recording,
    Replay,
    kdiffusion_run,
    kdiffusion_sampling,
    run_recorded,
    start,
)
from .test_nfe_counting import CountingNetwork

ADAPTED = [name for name in get_plugins().samplers.names()
           if name.startswith("kdiffusion:")]
#: The functions with a grid and a declared cost, and the stochastic forms of those
#: whose noise is off by default (k-diffusion 0.1.1).
REGISTERED = {"euler", "euler_churn", "euler_ancestral", "heun", "heun_churn", "dpm_2",
              "dpm_2_churn", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_fast_eta",
              "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde",
              "dpmpp_3m_sde"}
#: The samplers whose noise k-diffusion draws from torch's global generator.
GLOBAL_RNG = {"euler_churn", "heun_churn", "dpm_2_churn"}


def sampler(name: str):
    return get_plugins().samplers.get(f"kdiffusion:{name}")


def test_every_sampling_function_is_registered_or_said_why_not():
    kd = kdiffusion_sampling()
    functions = {name[len("sample_"):] for name in dir(kd) if name.startswith("sample_")}
    assert {name.split(":")[1] for name in ADAPTED} == REGISTERED
    assert set(kdiffusion_samplers.NOT_ADAPTED) == {"dpm_adaptive"}
    assert functions == {n.removesuffix("_churn").removesuffix("_eta")
                         for n in REGISTERED} | {"dpm_adaptive"}


def test_signatures_read_from_the_source_are_the_functions_own():
    kd = kdiffusion_sampling()
    read = kdiffusion_loading.signatures(kdiffusion_loading.source())
    assert set(read) == {n[len("sample_"):] for n in dir(kd) if n.startswith("sample_")}
    for name, (signature, doc) in read.items():
        function = getattr(kd, f"sample_{name}")
        assert signature == inspect.signature(function), name
        assert doc == (inspect.getdoc(function) or ""), name


# --- (a) the adapter's samples are k-diffusion's, called by hand -------------------------

#: Every function on the grid, at its defaults: its noise replayed from the adapter's.
ON_THE_GRID = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "euler_ancestral",
               "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
               "dpmpp_3m_sde"]


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("name", ON_THE_GRID)
def test_equals_the_function_called_by_hand(name, process):
    kd = kdiffusion_sampling()
    model = mixture_64d(make_sde(process))
    grid = make_grid(model.sde, "karras", 7)
    x_T = start(model)
    ours, draws = run_recorded(f"kdiffusion:{name}", model, grid, x_T)
    replay = Replay(draws)
    noise = {"noise_sampler": replay} if draws else {}
    reference = kdiffusion_run(getattr(kd, f"sample_{name}"), model, grid, x_T, **noise)
    assert replay.used == len(draws)
    assert sampler(name).capabilities.stochastic == bool(draws)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("process", ["vp", "ve"])
@pytest.mark.parametrize("name, eta", [("dpm_fast", 0.0), ("dpm_fast_eta", 1.0)])
def test_dpm_fast_runs_between_the_grids_end_points(name, eta, process):
    # Under VP the grid ends at 0, so dpm_fast stops at its last positive level; under VE
    # it ends at sigma_min > 0.
    kd = kdiffusion_sampling()
    model = mixture_64d(make_sde(process))
    grid = make_grid(model.sde, "karras", 8)
    x_T = start(model)
    ours, draws = run_recorded(f"kdiffusion:{name}", model, grid, x_T)
    positive = [s for s in grid.sigma if s > 0]
    noise = {"noise_sampler": Replay(draws)} if draws else {}
    reference = kd.sample_dpm_fast(model.denoise, x_T / grid.scale[0], positive[-1],
                                   grid.sigma[0], 8, eta=eta, disable=True,
                                   **noise) * grid.scale[-1]
    assert bool(draws) == bool(eta)     # at eta = 0 it draws nothing (its draws count 0)
    assert torch.equal(ours, reference)


class RandnLike:
    """`torch.randn_like` that records its draws, or replays recorded ones."""

    def __init__(self, draws=None):
        self.draws, self.replay = list(draws or []), draws is not None
        self.used = 0

    def __call__(self, like):
        if self.replay:
            self.used += 1
            return self.draws[self.used - 1]
        self.draws.append(torch.randn(like.shape, dtype=like.dtype))
        return self.draws[-1]


@pytest.mark.parametrize("name", sorted(GLOBAL_RNG))
def test_churn_equals_the_function_by_hand_with_the_same_global_draws(name, monkeypatch):
    kd = kdiffusion_sampling()
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 7)
    x_T = start(model)
    recorded = RandnLike()
    monkeypatch.setattr(torch, "randn_like", recorded)
    ours, _ = run_recorded(f"kdiffusion:{name}", model, grid, x_T)
    replayed = RandnLike(recorded.draws)
    monkeypatch.setattr(torch, "randn_like", replayed)
    function = getattr(kd, f"sample_{name.removesuffix('_churn')}")
    reference = kdiffusion_run(function, model, grid, x_T, s_churn=10.0)
    assert len(recorded.draws) == grid.steps and replayed.used == grid.steps
    assert torch.equal(ours, reference)


# --- (b) NFE: counted = the network's calls = declared ----------------------------------

@pytest.mark.parametrize("name", ADAPTED)
def test_counted_nfe_is_the_networks_calls_and_the_declared(name):
    sde = VPSDE()
    adapted = get_plugins().samplers.get(name)
    params, batch = adapted.make_params(), 3
    for steps, to_zero in itertools.product((2, 5, 9), (True, False)):
        grid = make_grid(sde, "karras", steps)
        if not to_zero:  # ends at sigma(t_min) > 0: every step an ordinary one
            grid = TimeGrid.from_times(sde, grid.t[:-1], grid.schedule)
        network = CountingNetwork(sde)
        model = CountedModel(NetworkScoreModel(network, sde, DataSpec(shape=(3,)),
                                               parametrization="eps").double())
        out = generate(model, adapted, grid, seed=0, indices=range(batch), params=params)
        expected = adapted.expected_nfe(grid.steps, params, grid.sigma[-1] == 0)
        assert torch.isfinite(out).all(), (steps, to_zero)
        assert model.nfe.calls == network.calls, (steps, to_zero)
        assert model.nfe.rows == network.rows == batch * network.calls, (steps, to_zero)
        assert model.nfe.per_sample(batch) == expected, (steps, to_zero, expected)


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_float32_a_step_across_four_decades_of_sigma_is_one_euler_evaluation(name):
    # k-diffusion's get_ancestral_step: sigma_down = sqrt(sigma_next^2 - sigma_up^2) is 0
    # in float32 when sigma_next / sigma < ~2.4e-4, and the step is then Euler's, one
    # evaluation short of the declared two: a 2-step grid from 80 to 0.002 under EDM.
    model = CountedModel(mixture_64d(make_sde("edm")).float())
    grid = make_grid(model.sde, "karras", 2)
    adapted = sampler(name)
    generate(model, adapted, grid, 0, range(2), dtype=torch.float32)
    assert model.nfe.per_sample(2) == adapted.expected_nfe(2, adapted.make_params()) - 1


# --- (c) noise: per-sample streams, or a seeded and restored global generator ------------

PER_SAMPLE = [name for name in ADAPTED
              if get_plugins().samplers.get(name).capabilities.stochastic
              and name.split(":")[1] not in GLOBAL_RNG]


def test_the_noise_parameter_says_where_the_noise_comes_from():
    for name in ADAPTED:
        short = name.split(":")[1]
        noise = sampler(short).make_params().noise
        expected = ("global-rng" if short in GLOBAL_RNG else "per-sample-untied"
                    if short == "dpmpp_sde" else "per-sample" if name in PER_SAMPLE
                    else "none")
        assert noise == expected, name


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_a_sample_is_the_same_alone_and_in_a_batch(name):
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 6)
    adapted = get_plugins().samplers.get(name)
    in_batch = generate(model, adapted, grid, 4, range(5))[3]
    alone = generate(model, adapted, grid, 4, [3])[0]
    assert torch.equal(in_batch, alone)


@pytest.mark.parametrize("name", sorted(GLOBAL_RNG) + ["euler"])
def test_global_draws_are_reproducible_and_leave_torchs_generator_alone(name):
    # sample_euler draws churn noise on every step, also at s_churn = 0, and discards it.
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 6)
    x_T, adapted = start(model, n=5), sampler(name)

    def run(seed):
        noise = SampleNoise(seed, range(5), model.data.shape, dtype=model.dtype)
        return adapted(model, x_T.clone(), grid, noise, None, adapted.make_params())

    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again)
    assert torch.equal(first, other) == (name == "euler")


# --- (d) bad parameters are refused, before any model loads ------------------------------

@pytest.mark.parametrize("name, values, fragments", [
    ("euler_ancestral", {"etaa": 0.5}, ["unknown parameter 'etaa'", "Did you mean 'eta'",
                                        "Available: eta, noise, s_noise"]),
    ("dpmpp_2m", {"eta": 0.5}, ["unknown parameter 'eta'", "Available: noise"]),
    ("dpmpp_sde", {"noise_sampler": None}, ["'noise_sampler' is set by the harness",
                                            "own noise stream"]),
    ("dpm_fast", {"n": 4}, ["'n' is set by the harness", "the trial's steps"]),
    ("euler", {"s_churn": 1.0}, ["'s_churn' is set by the harness", "no noise is drawn",
                                 "kdiffusion:euler_churn sets it"]),
    ("euler_churn", {"noise": "per-sample"}, ["'noise' must be one of 'global-rng'"]),
    ("dpmpp_2m_sde", {"solver_type": "mid"}, ["'solver_type' must be one of", "'heun'",
                                              "'midpoint'"]),
    ("dpm_2_ancestral", {"eta": 1.5}, ["'eta' must be <= 1.0", "one evaluation"]),
    ("lms", {"order": 0}, ["'order' must be >= 1"]),
])
def test_bad_parameters_are_refused_saying_why(name, values, fragments):
    with pytest.raises(ParameterError) as info:
        sampler(name).make_params(values)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_the_library_defaults_and_the_switched_defaults():
    assert sampler("euler_ancestral").make_params({"eta": 1.5}).eta == 1.5  # no limit
    assert sampler("euler_churn").make_params().s_churn == 10.0
    assert sampler("dpm_fast_eta").make_params().eta == 1.0
    assert sampler("dpmpp_sde").make_params().to_dict() == {
        "eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise": "per-sample-untied"}


SUITE = """
model = "gmm-ring-2d"
steps = [3]
num_samples = 4
device = "cpu"

[samplers."kdiffusion:euler_ancestral"]
params = {{ {params} }}
"""


@pytest.mark.parametrize("params, fragments", [
    ("etaa = 0.5", ["samplers.kdiffusion:euler_ancestral.params",
                    "unknown parameter 'etaa'", "Did you mean 'eta'"]),
    ("noise_sampler = 1", ["parameter 'noise_sampler' is set by the harness",
                           "each sample's own noise stream"]),
    ("noise = 'none'", ["noise", "must be one of 'per-sample'"]),
])
def test_a_suites_typo_fails_its_dry_run_before_the_model_loads(params, fragments, tmp_path,
                                                                 monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("harness.commands.run.load_model", no_model)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "typo.toml"
    path.write_text(SUITE.format(params=params))
    assert harness("run", path, "--dry-run") == 2
    error = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in error, error


# --- the callback: each step's end, on the grid ------------------------------------------

@pytest.mark.parametrize("name", ["euler", "heun", "lms", "dpmpp_2m"])
def test_the_callback_reports_the_state_after_each_step(name):
    # The state after step i is the output of the same run on the grid cut after t_{i+1}.
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 5)
    x_T, seen = start(model), []
    adapted = sampler(name)
    adapted(model, x_T.clone(), grid, None, seen.append, adapted.make_params())
    assert [(d["i"], d["t"]) for d in seen] == list(enumerate(grid.t[1:]))
    for i, report in enumerate(seen):
        cut = TimeGrid(grid.t[:i + 2], grid.sigma[:i + 2], grid.scale[:i + 2])
        alone = adapted(model, x_T.clone(), cut, None, None, adapted.make_params())
        assert torch.equal(report["x"], alone), i


def test_dpm_fast_reports_its_own_steps():
    model = mixture_64d(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 8)
    seen = []
    generate(model, sampler("dpm_fast"), grid, 0, range(2), callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1, 2]               # floor(8 / 3) + 1 steps
    assert seen[-1]["t"] == grid.t[-1]
    assert grid.t[-2] < seen[0]["t"] < grid.t[0]


# --- registration: cheap when installed, silent when not --------------------------------

PROBE = """
import importlib.util, json, sys
{hide}
from harness.plugin.manager import get_plugins
from harness_plugins import kdiffusion_loading
loaded = get_plugins()
ITS_CODE = ("scipy.integrate", "torchdiffeq", "torchsde", "k_diffusion.sampling",
            kdiffusion_loading.PRIVATE + ".sampling")
imported = sorted(m for m in ITS_CODE if m in sys.modules)
print(json.dumps({{
    "found": importlib.util.find_spec("k_diffusion") is not None,
    "failures": [str(f.message) for f in loaded.failures],
    "adapted": [n for n in loaded.samplers.names() if n.startswith("kdiffusion:")],
    "plugins": [p.module for p in loaded.plugins],
    "imported": imported,
    "module": kdiffusion_loading.load() is not None,
}}))
"""

HIDE = """
class Hidden:
    # Every finder as it was, except that none finds k_diffusion: not installed.
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "k_diffusion":
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def probe(hide: str) -> tuple[dict, str]:
    """What loading the plugins does in a fresh interpreter, this plugin's doing alone
    (the diffusers adapter imports torchsde and has warnings of its own)."""
    script = PROBE.format(hide=textwrap.dedent(hide))
    env = {**os.environ, "HARNESS_DISABLE_PLUGINS": "diffusers_schedulers"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_without_k_diffusion_nothing_is_registered_and_nothing_said():
    found, stderr = probe(HIDE)
    assert not found["found"] and not found["module"]
    assert found["adapted"] == [] and found["failures"] == [] and stderr == ""
    assert "harness_plugins.kdiffusion_samplers" in found["plugins"]


def test_registering_loads_none_of_k_diffusions_code():
    kdiffusion_sampling()
    found, _ = probe("")
    assert len(found["adapted"]) == len(REGISTERED) and found["failures"] == []
    assert found["imported"] == [] and found["module"]


def test_a_sampler_runs_where_its_noise_comes_from_a_recording():
    # The harness's `noise` may be any callable (a recording, the kit's unit draws).
    model = mixture_64d(make_sde("edm"))
    grid = make_grid(model.sde, "karras", 4)
    draws = Recording(lambda like: torch.ones_like(like))
    adapted = sampler("euler_ancestral")
    adapted(model, start(model), grid, draws, None, adapted.make_params())
    assert len(draws.draws) == grid.steps - 1       # none on the step to sigma = 0
