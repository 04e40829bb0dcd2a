"""`harness run` under torchrun gives what one process gives, and only rank 0 records it.

One suite on the 2-D ring oracle, run by `tests/harness_run_worker.py` as one process
and as `torchrun --standalone --nproc_per_node=2` (gloo, CPU): every metric of every
trial (FID from moments summed over ranks, the reference NLL solved per rank and
gathered, and the ODE error, exact KL and distances to exact samples, which are
functions of all gathered samples) must agree to float tolerance. A sampler that returns
NaN for sample 1 only fails on one rank; the trial must be FAILED (not hang) and the
others finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench_support import _template_store, suite_runs, trial_runs

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_LIMIT_S = 400  # generous: the machine is shared; each run normally takes ~30 s

SUITE = """
experiment = "sharded"
model = "gmm-ring-2d"
schedule = "karras"
steps = [6]
seeds = [3]
num_samples = 37      # odd: the two shards differ in size
batch_size = 8        # several batches per process
device = "cpu"

[model_options]
sde = "vp"

[samplers.euler]
[samplers.heun]
[samplers.euler_maruyama]
[samplers.langevin.params]
S_churn = 5.0
[samplers.nan_for_sample_1]

[metrics.fid]
[metrics.nll]
num_points = 9
batch_size = 1        # one adaptive solve per point: no dependence on batch-mates
[metrics.ode_error]
num_samples = 9
[metrics.discrete_kl]
num_samples = 9
[metrics.sliced_wasserstein]
num_reference = 2000
[metrics.mmd_oracle]
num_reference = 500
[metrics.order_probe]  # the only one of these that sees the order of the samples
"""

FINISHED_TRIALS = {"euler-6nfe-seed3", "heun-11nfe-seed3", "euler_maruyama-6nfe-seed3",
                   "langevin-11nfe-seed3"}
FAILING_TRIAL = "nan_for_sample_1-6nfe-seed3"
#: The real-data floor: exact samples of the ring, 4 draws (FID and the distances).
FLOOR_TRIALS = {f"data-draw{d}" for d in range(4)}


def _run(folder: Path, processes: int) -> tuple[subprocess.CompletedProcess, Path]:
    folder.mkdir()
    (folder / "suite.toml").write_text(SUITE)
    shutil.copyfile(_template_store(), folder / "mlflow.db")
    done = _harness(folder, processes, "run", "suite.toml", "--quiet",
                    "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}")
    return done, folder


def _harness(folder: Path, processes: int, *argv: str) -> subprocess.CompletedProcess:
    """`harness ARGV` in `folder`, as one process or `processes` under torchrun."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               HARNESS_CACHE_DIR=str(folder / "cache"))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable])
    command = [*launcher, str(ROOT / "tests" / "harness_run_worker.py"), *argv]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_LIMIT_S)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[subprocess.CompletedProcess, Path]]:
    root = tmp_path_factory.mktemp("harness-run")
    return {n: _run(root / f"{n}-processes", n) for n in (1, 2)}


def _records(folder: Path) -> list[dict]:
    path = folder / "runs" / "sharded" / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _trials(folder: Path) -> dict[str, dict]:
    return {r["name"]: r for r in _records(folder) if r["kind"] == "trial"}


def test_both_runs_finish_with_the_one_failing_trial(runs):
    for processes, (done, folder) in runs.items():
        assert done.returncode == 1, (processes, done.stdout[-3000:], done.stderr[-3000:])
        assert "8 trials finished, 1 failed" in done.stdout, done.stdout[-3000:]
        statuses = {name: r["status"] for name, r in _trials(folder).items()}
        assert statuses == {**dict.fromkeys(FINISHED_TRIALS | FLOOR_TRIALS, "FINISHED"),
                            FAILING_TRIAL: "FAILED"}


def test_the_failure_of_one_rank_is_named_on_rank_0(runs):
    one = _trials(runs[1][1])[FAILING_TRIAL]["error"]
    two = _trials(runs[2][1])[FAILING_TRIAL]["error"]
    assert "NaN/Inf in 1 of" in one
    assert two.startswith("FailedOnAnotherRank: rank 1: TrialFailure: sampler returned "
                          "NaN/Inf in 1 of"), two


def test_every_metric_is_the_same_with_two_processes(runs):
    one, two = _trials(runs[1][1]), _trials(runs[2][1])
    compared = 0
    for name in FINISHED_TRIALS:
        a, b = one[name]["metrics"], two[name]["metrics"]
        for key in ("nfe", "order_probe", "fid", "fid_num_samples", "sliced_wasserstein",
                    "mmd_oracle", "ode_error", "ode_error_stderr", "discrete_kl"):
            if key.startswith(("ode_error", "discrete_kl")) and name.startswith(
                    ("euler_maruyama", "langevin")):
                assert key not in a and key not in b  # only for deterministic samplers
                continue
            if key == "discrete_kl" and name == "heun-11nfe-seed3":
                # Heun's 6 steps fold the ring's plane: no number, the same reason on both.
                assert key not in a and key not in b
                status = [run[name]["measured_params"]["discrete_kl_status"]
                          for run in (one, two)]
                assert status[0] == status[1] and status[0].startswith(
                    "not invertible at N = 6"), status
                continue
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), (name, key)
            compared += 1
    assert compared == 4 * 6 + 2 * 3 - 1
    for name in FLOOR_TRIALS:            # held-out data: the same on every process too
        a, b = one[name]["metrics"], two[name]["metrics"]
        for key in ("fid", "sliced_wasserstein", "mmd_oracle", "fid_ci_low", "fid_ci_high"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), (name, key)
    assert one["heun-11nfe-seed3"]["metrics"]["nfe"] == 11.0
    assert one["euler-6nfe-seed3"]["metrics"]["fid_num_samples"] == 37.0


def test_the_reference_nll_is_the_same_with_two_processes(runs):
    """The model's NLL (once per suite): each process solves its own test points."""
    one, two = ({k: v for r in _records(folder) if r["kind"] == "suite_values"
                 for k, v in r["values"].items()} for _, folder in (runs[1], runs[2]))
    assert one["nll_num_points"] == two["nll_num_points"] == 9
    for key in ("nll", "nll_stderr", "nll_nats", "nll_nfe_mean", "nll_nfe_max"):
        assert two[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key


def test_the_runs_say_how_many_processes_made_them(runs):
    suites = {n: next(r for r in _records(folder) if r["kind"] == "suite")
              for n, (_, folder) in runs.items()}
    assert suites[1]["environment"]["world_size"] == "1"
    assert suites[2]["environment"]["world_size"] == "2"
    assert suites[2]["environment"]["distributed_backend"] == "gloo"


def test_only_rank_0_records(runs):
    done, folder = runs[2]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert len(suite_runs(uri, "sharded")) == 1
    assert sorted(r.data.tags["mlflow.runName"] for r in trial_runs(uri, "sharded")) == \
        sorted(FINISHED_TRIALS | FLOOR_TRIALS | {FAILING_TRIAL})
    kinds = [r["kind"] for r in _records(folder)]
    assert kinds.count("suite") == 1 and kinds.count("trial") == 9
    assert done.stdout.count("trials finished") == 1  # the summary is printed once


def test_an_unreachable_tracking_server_stops_every_process_before_compute(tmp_path):
    """Only rank 0 connects; its refusal reaches the other rank instead of a hang."""
    (tmp_path / "suite.toml").write_text(SUITE)
    done = _harness(tmp_path, 2, "run", "suite.toml", "--quiet",
                    "--tracking-uri", "http://127.0.0.1:9")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "is not reachable" in output, output[-3000:]
    # Rank 1 learnt it from rank 0 (without that it would wait in a collective, and
    # torchrun would end it with a signal, printing nothing).
    assert "error: rank 0: TrackingError: the MLflow tracking store" in output
    assert "nothing was computed" in output
    assert not (tmp_path / "runs").exists()
