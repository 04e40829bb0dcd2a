"""The example plugin (examples/harness-dpmsolver): its samplers on the exact oracle, and
its installation as a separate distribution.

Fast: DPM-Solver++(2M) matches an independent transcription of the reference
implementation's form (k-diffusion's `sample_dpmpp_2m`, in the unscaled variable) and
converges with order 2, DDIM with order 1, and DDIM is exactly Euler under EDM.

Slow: from a fresh virtual environment, the guide's two `pip install` lines (the harness,
then the example plugin) make the new samplers appear in `harness plugins`, run in
`harness run` and land in MLflow with their distribution; the plugin's own tests, which
use the conformance kit shipped with the harness, pass there. It installs torch and the
harness's dependencies from scratch (minutes); `PIP_CONSTRAINT` keeps torch at the CPU
build of constraints.txt.
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

from harness import generate, make_grid
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_sampler
from harness.core.noise import SampleNoise
from harness.core.sde import make_sde
from tests.plugins import example_plugin

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


# --- installing it from scratch, as the guide says ------------------------------------

def guide_install_lines() -> list[list[str]]:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    start = guide.index("## Installing the harness and a plugin")
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


@pytest.mark.slow
def test_guide_install_then_plugins_run_and_mlflow(tmp_path):
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
    for line in lines:  # the guide's lines; skipping .pyc files took the install 6 -> 1.5 min
        run([bin_dir / "pip", *line[1:], "--quiet", "--no-compile"], cwd=source, env=env)
    installed = time.perf_counter()

    info = json.loads(run([bin_dir / "harness", "plugins", "--json"], tmp_path, env))
    assert info["failures"] == []
    samplers = {s["name"]: s for s in info["samplers"]}
    for name in ("dpmpp_2m", "ddim"):
        assert samplers[name]["origin"] == {"plugin": "dpmsolver", "module": "harness_dpmsolver",
                                            "distribution": "harness-dpmsolver",
                                            "version": "0.1.0"}
    assert samplers["dpmpp_2m"]["capabilities"] == {
        "stochastic": False, "order": 2, "nfe_per_step": 1, "final_step_nfe": None,
        "pf_ode": False}
    assert samplers["heun"]["origin"]["distribution"] == "diffusion-sampler-harness"

    # A tiny `harness run` of the new sampler, logged to MLflow like the built-ins.
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run([bin_dir / "harness", "run", "smoke", "--samplers", "dpmpp_2m", "--nfe", "8",
         "--tracking-uri", tracking, "--out", tmp_path / "results", "--quiet"], tmp_path, env)
    trials = [json.loads(line) for line in
              (tmp_path / "results" / "smoke" / "trials.jsonl").read_text().splitlines()]
    (trial,) = [t for t in trials if t.get("kind") == "trial"]
    assert (trial["sampler"], trial["status"], trial["metrics"]["nfe"]) == (
        "dpmpp_2m", "FINISHED", 8.0)
    query = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri({tracking!r})\n"
        "runs = mlflow.search_runs(experiment_names=['smoke'], output_format='list')\n"
        "print(json.dumps([dict(r.data.params, nfe=r.data.metrics.get('nfe')) for r in runs]))")
    runs = json.loads(run([bin_dir / "python", "-c", query], tmp_path, env).splitlines()[-1])
    (logged,) = [r for r in runs if r.get("sampler") == "dpmpp_2m"]
    assert logged["sampler_origin.distribution"] == "harness-dpmsolver"
    assert logged["sampler_origin.version"] == "0.1.0"
    assert logged["nfe"] == 8.0

    # The plugin's own tests, written with the kit that ships in the installed harness.
    run([bin_dir / "pip", "install", "--quiet", "pytest"], source, env)
    out = run([bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "examples/harness-dpmsolver"], source, env)
    assert re.search(r"^3 passed", out, re.MULTILINE), out

    finished = time.perf_counter()
    print(f"\nfresh venv: install {installed - started:.0f} s, "
          f"plugins + run + kit {finished - installed:.0f} s")
