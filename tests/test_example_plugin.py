"""The example plugins (examples/harness-dpmsolver, examples/harness-energy): their
samplers and metric on the exact oracle, and their installation as separate
distributions.

Fast: DPM-Solver++(2M) matches an independent transcription of the reference
implementation's form (k-diffusion's `sample_dpmpp_2m`, in the unscaled variable) and
converges with order 2, DDIM with order 1, and DDIM is exactly Euler under EDM. The
energy metric equals the energy distance written pair by pair, passes the metric kit,
and its shares of the sums over two processes add up to the one-process sums.

Slow: from a fresh virtual environment, the guide's `pip install` lines (the harness,
then each example plugin) make the new samplers and the metric appear in `harness
plugins`, run in `harness run` and land in MLflow with their distribution; the plugins'
own tests, which use the conformance kits shipped with the harness, pass there. It
installs torch and the harness's dependencies from scratch (minutes); `PIP_CONSTRAINT`
keeps torch at the CPU build of constraints.txt.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import SuiteContext, TrialContext, generate, make_grid
from harness.core.noise import SampleNoise
from harness.core.sde import make_sde
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_sampler
from harness.testing import check_metric
from tests.plugins import example_metric_plugin, example_plugin

ROOT = Path(__file__).parent.parent
#: Not copied into the build tree: version control, caches and local results.
IGNORED = shutil.ignore_patterns(".git", ".tox", ".venv", "build", "dist", "*.egg-info",
                                 "__pycache__", ".pytest_cache", "mlruns", "mlartifacts",
                                 "mlflow.db", ".benchmarks")


# --- the samplers on the exact oracle -----------------------------------------------------

def dpmpp_2m_reference(model, x, sigmas):
    """k-diffusion's `sample_dpmpp_2m` loop, transcribed, on the unscaled variable x / s."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model.denoise(x, sigmas[i])
        t = -math.log(sigmas[i])
        t_next = -math.log(sigmas[i + 1]) if sigmas[i + 1] > 0 else math.inf
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = math.exp(-h) * x - math.expm1(-h) * denoised
        else:
            r = (t + math.log(sigmas[i - 1])) / h               # h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = math.exp(-h) * x - math.expm1(-h) * d
        old_denoised = denoised
    return x


def initial_state(model, n):
    """x_T exactly as `generate` draws it for seed 0."""
    return model.sde.prior_std * SampleNoise(0, range(n), model.data.shape,
                                             dtype=model.dtype)()


@pytest.mark.parametrize("process", ["vp", "subvp", "ve", "edm"])
def test_dpmpp_2m_matches_the_reference_form(process):
    model = ring_2d(make_sde(process))
    grid = make_grid(model.sde, "karras", 12)
    ours = generate(model, example_plugin().DPMPP_2M, grid, seed=0, indices=range(64))
    x_T = initial_state(model, 64)
    reference = dpmpp_2m_reference(model, x_T / grid.scale[0], grid.sigma) * grid.scale[-1]
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_ddim_is_euler_under_edm():
    model = ring_2d(make_sde("edm"))
    grid = make_grid(model.sde, "karras", 20)
    ddim = generate(model, example_plugin().DDIM, grid, seed=0, indices=range(64))
    euler = generate(model, get_sampler("euler"), grid, seed=0, indices=range(64))
    torch.testing.assert_close(ddim, euler, rtol=1e-10, atol=1e-12)


@functools.lru_cache(maxsize=None)
def heun_reference(process):
    """The PF-ODE's endpoints from seed 0's x_T, by Heun at 1000 steps (error ~1e-5)."""
    model = ring_2d(make_sde(process))
    return generate(model, get_sampler("heun"), make_grid(model.sde, "karras", 1000),
                    seed=0, indices=range(128))


@pytest.mark.parametrize("process", ["vp", "edm"])
@pytest.mark.parametrize("name, order", [("DPMPP_2M", 2), ("DDIM", 1)])
def test_convergence_order_on_the_oracle(process, name, order):
    model, reference = ring_2d(make_sde(process)), heun_reference(process)
    sampler = getattr(example_plugin(), name)
    steps = [32, 64, 128]
    errors = [float((generate(model, sampler, make_grid(model.sde, "karras", n), seed=0,
                              indices=range(128)) - reference).norm(dim=1).mean())
              for n in steps]
    slope = -torch.linalg.lstsq(
        torch.tensor([[math.log(n), 1.0] for n in steps], dtype=torch.float64),
        torch.tensor([[math.log(e)] for e in errors], dtype=torch.float64)).solution[0, 0]
    assert abs(float(slope) - order) < 0.3, (name, process, errors, float(slope))


# --- the example metric ---------------------------------------------------------------

def energy_pairwise(x, y):
    """2 E|X-Y| - E|X-X'| - E|Y-Y'| over the empirical distributions, pair by pair."""
    def mean_distance(a, b):
        return float((a.double()[:, None, :] - b.double()[None, :, :]).norm(dim=-1).mean())
    return 2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y)


def energy_trial(n=200, num_reference=300):
    model = ring_2d(make_sde("vp"))
    suite = SuiteContext(model=model, model_name="ring", device="cpu",
                         options={"energy": {"num_reference": num_reference}})
    metric = example_metric_plugin().EnergyDistance()
    metric.prepare(suite)
    samples = generate(model, get_sampler("heun"), make_grid(model.sde, "karras", 8), seed=0,
                       indices=range(n))
    trial = TrialContext(suite=suite, sampler=get_sampler("heun"), params=None, grid=None,
                         seed=0, samples=samples)
    return metric, trial, model.reference_data("test", num_reference).data


def test_energy_is_the_energy_distance_written_pair_by_pair():
    metric, trial, reference = energy_trial()
    values = metric.compute(trial)
    assert values["energy"] == pytest.approx(energy_pairwise(trial.samples, reference),
                                             rel=1e-10)
    assert values["energy_num_samples"] == 200 and values["energy_num_reference"] == 300
    assert metric.params()["energy_reference"].startswith("gmm:")
    # Exact samples of the same mixture are at the floor, far below 8-step heun's.
    exact = ring_2d(make_sde("vp")).reference_data("train", 200).data
    assert energy_pairwise(exact, reference) < 0.5 * values["energy"]


def test_energy_sums_shared_over_two_processes_add_up(monkeypatch):
    """Process r of 2 sums over rows r::2; all_reduce_sum adds those partial sums."""
    plugin = example_metric_plugin()
    metric, trial, _ = energy_trial(n=201)
    partial = []
    monkeypatch.setattr(plugin, "all_reduce_sum", lambda t: partial.append(t) or t)
    metric.compute(trial)
    for rank in (0, 1):
        monkeypatch.setattr(plugin, "local_rows", lambda t, r=rank: t[r::2])
        metric.compute(trial)
    whole, shares = partial[0], partial[1] + partial[2]
    torch.testing.assert_close(shares, whole, rtol=1e-12, atol=0)


def test_energy_passes_the_metric_kit():
    report = check_metric(example_metric_plugin().EnergyDistance,
                          options={"num_reference": 500})
    assert report.passed, str(report)


# --- installing it from scratch, as the guide says ------------------------------------

def guide_install_lines(heading: str = "## Installing the harness and a plugin"
                        ) -> list[list[str]]:
    """The `pip install` lines of the guide's first sh block under `heading`."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    start = guide.index(heading)
    block = re.search(r"^```sh\n(.*?)^```$", guide[start:], re.MULTILINE | re.DOTALL).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.startswith("pip install")]


def run(args: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{shlex.join(map(str, args))} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A fresh venv with the harness and both example plugins, installed by the guide's
    lines: (tmp folder, bin folder, environment, repository copy)."""
    tmp_path = tmp_path_factory.mktemp("fresh")
    started = time.perf_counter()
    # A copy of the repository, so that building it leaves the working tree untouched.
    source = tmp_path / "repo"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PIP_CONSTRAINT=str(source / "constraints.txt"), MPLBACKEND="Agg",
               HARNESS_DISABLE_PLUGINS="", HARNESS_TRACE_HOOKS="")

    lines = guide_install_lines()
    assert [line[:2] for line in lines] == [["pip", "install"]] * 2
    metric_lines = guide_install_lines("### The example metric plugin")
    assert metric_lines == [["pip", "install", "./examples/harness-energy"]]
    for line in lines + metric_lines:  # skipping .pyc files took the install 6 -> 1.5 min
        run([bin_dir / "pip", *line[1:], "--quiet", "--no-compile"], cwd=source, env=env)
    run([bin_dir / "pip", "install", "--quiet", "pytest"], source, env)
    print(f"\nfresh venv: install {time.perf_counter() - started:.0f} s")
    return tmp_path, bin_dir, env, source


def logged_runs(bin_dir: Path, tmp_path: Path, env: dict, tracking: str) -> list[dict]:
    """Every MLflow run of the experiment 'smoke': its params, with its metrics."""
    query = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri({tracking!r})\n"
        "runs = mlflow.search_runs(experiment_names=['smoke'], output_format='list')\n"
        "print(json.dumps([dict(r.data.params, **r.data.metrics) for r in runs]))")
    return json.loads(run([bin_dir / "python", "-c", query], tmp_path, env).splitlines()[-1])


@pytest.mark.slow
def test_guide_install_then_plugins_run_and_mlflow(fresh_venv):
    tmp_path, bin_dir, env, source = fresh_venv
    started = time.perf_counter()
    info = json.loads(run([bin_dir / "harness", "plugins", "--json"], tmp_path, env))
    assert info["failures"] == []
    samplers = {s["name"]: s for s in info["samplers"]}
    for name in ("example_dpmpp_2m", "example_ddim"):
        assert samplers[name]["origin"] == {"plugin": "dpmsolver", "module": "harness_dpmsolver",
                                            "distribution": "harness-dpmsolver",
                                            "version": "0.1.0"}
    assert samplers["example_dpmpp_2m"]["capabilities"] == {
        "stochastic": False, "order": 2, "nfe_per_step": 1, "final_step_nfe": None,
        "extra_nfe": 0, "pf_ode": False}
    assert samplers["heun"]["origin"]["distribution"] == "diffusion-sampler-harness"

    # A tiny `harness run` of the new sampler, logged to MLflow like the built-ins.
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run([bin_dir / "harness", "run", "smoke", "--samplers", "example_dpmpp_2m", "--nfe", "8",
         "--tracking-uri", tracking, "--out", tmp_path / "results", "--quiet"], tmp_path, env)
    trials = [json.loads(line) for line in
              (tmp_path / "results" / "smoke" / "trials.jsonl").read_text().splitlines()]
    (trial,) = [t for t in trials if t.get("kind") == "trial"]
    assert (trial["sampler"], trial["status"], trial["metrics"]["nfe"]) == (
        "example_dpmpp_2m", "FINISHED", 8.0)
    runs = logged_runs(bin_dir, tmp_path, env, tracking)
    (logged,) = [r for r in runs if r.get("sampler") == "example_dpmpp_2m"]
    assert logged["sampler_origin.distribution"] == "harness-dpmsolver"
    assert logged["sampler_origin.version"] == "0.1.0"
    assert logged["nfe"] == 8.0

    # The plugin's own tests, written with the kit that ships in the installed harness.
    out = run([bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "examples/harness-dpmsolver"], source, env)
    assert re.search(r"^3 passed", out, re.MULTILINE), out
    print(f"\nplugins + run + kit {time.perf_counter() - started:.0f} s")


@pytest.mark.slow
def test_guide_install_then_metric_plugin_runs_and_mlflow(fresh_venv):
    tmp_path, bin_dir, env, source = fresh_venv
    info = json.loads(run([bin_dir / "harness", "plugins", "--json"], tmp_path, env))
    assert info["failures"] == []
    metrics = {m["name"]: m for m in info["metrics"]}
    assert metrics["energy"]["origin"] == {"plugin": "energy", "module": "harness_energy",
                                           "distribution": "harness-energy", "version": "0.1.0"}
    assert (metrics["energy"]["unit"], metrics["energy"]["higher_is_better"]) == ("energy", False)

    # The guide's `harness run smoke --metrics energy`, with a smaller reference set.
    tracking = f"sqlite:///{tmp_path / 'metric.db'}"
    out_dir = tmp_path / "metric_results"
    run([bin_dir / "harness", "run", "smoke", "--samplers", "heun", "--nfe", "8",
         "--metrics", "energy", "--set", "metrics.energy.num_reference=500",
         "--tracking-uri", tracking, "--out", out_dir, "--quiet"], tmp_path, env)
    trials = [json.loads(line) for line in
              (out_dir / "smoke" / "trials.jsonl").read_text().splitlines()]
    (trial,) = [t for t in trials if t.get("kind") == "trial"]
    assert trial["status"] == "FINISHED" and 0 < trial["metrics"]["energy"] < 1
    assert trial["metrics"]["energy_num_reference"] == 500
    (logged,) = [r for r in logged_runs(bin_dir, tmp_path, env, tracking)
                 if r.get("sampler") == "heun"]
    assert logged["energy"] == trial["metrics"]["energy"]
    assert logged["energy_reference"].startswith("gmm:")

    out = run([bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "examples/harness-energy"], source, env)
    assert re.search(r"^3 passed", out, re.MULTILINE), out
