"""`harness run --network-dtype / --compile`: applied to the network, recorded, validated."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from tests.bench_support import bench_environment, harness, write_suite

DIGITS_SUITE = """
experiment = "precision"
model = "digits"
steps = [3]
num_samples = 8
batch_size = 8
device = "cpu"

[samplers.euler]

[metrics.msn]
"""


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def _trial_and_environment(tmp_path) -> tuple[dict, dict]:
    records = [json.loads(line) for line in
               (tmp_path / "runs/precision/trials.jsonl").read_text().splitlines()]
    suite = [r for r in records if r["kind"] == "suite"][-1]
    trial = [r for r in records if r["kind"] == "trial"][-1]
    return trial, suite["environment"]


def test_bf16_network_runs_and_is_recorded(bench, tmp_path):
    suite = write_suite(tmp_path / "digits.toml", DIGITS_SUITE)
    assert harness("run", suite, "--quiet") == 0
    native, env = _trial_and_environment(tmp_path)
    assert env["network_dtype"] == "native" and env["network_autocast"] == "False"

    assert harness("run", suite, "--quiet", "--network-dtype", "bf16") == 0
    bf16, env = _trial_and_environment(tmp_path)
    assert env["network_dtype"] == "bf16" and env["network_autocast"] == "True"
    assert bf16["status"] == "FINISHED" and bf16["metrics"]["nfe"] == 3.0
    assert bf16["config_hash"] != native["config_hash"]
    # bf16 arithmetic changes the samples a little, not a lot.
    a, b = native["metrics"]["msn"], bf16["metrics"]["msn"]
    assert a != b and b == pytest.approx(a, rel=0.05)


def test_compile_reaches_the_network(bench, tmp_path, monkeypatch):
    calls = []
    # Dynamo's capture without code generation (inductor takes minutes on this CPU).
    eager = functools.partial(torch.compile, backend="eager")
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append(module)
                        or eager(module, **kw))
    suite = write_suite(tmp_path / "digits.toml", DIGITS_SUITE)
    assert harness("run", suite, "--quiet", "--compile") == 0
    trial, env = _trial_and_environment(tmp_path)
    assert len(calls) == 1 and env["network_compiled"] == "True"
    assert trial["status"] == "FINISHED" and trial["metrics"]["nfe"] == 3.0


def test_a_model_without_a_network_is_refused_before_any_trial(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "ring.toml", DIGITS_SUITE.replace('"digits"',
                                                                     '"gmm-ring-2d"'))
    assert harness("run", suite, "--quiet", "--network-dtype", "fp16") == 2
    assert "has no network module" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "precision").exists()


def test_a_float64_state_keeps_the_nll_in_float64_whatever_the_network(plugins, monkeypatch):
    """A configured network keeps float32 weights (so model.dtype is float32); the NLL's
    ODE state must still follow the suite's dtype."""
    from harness.metrics import sharded as sharded_metrics
    from harness.metrics.metric import SuiteContext, TrialContext
    from harness.models.precision import configure_model
    from harness_plugins.metrics import NLLMetric

    solved_in = []
    real = sharded_metrics.ode_nll
    monkeypatch.setattr(sharded_metrics, "ode_nll",
                        lambda *a, **k: solved_in.append(k["dtype"]) or real(*a, **k))
    model = plugins.models.get("digits").build("cpu").to(torch.float64)
    model = configure_model(model, dtype="fp32")
    assert model.dtype == torch.float32
    suite = SuiteContext(model=model, model_name="digits", device="cpu", dtype=torch.float64,
                         options={"nll": {"num_points": 2, "rtol": 1e-3, "atol": 1e-3}})
    values = NLLMetric().compute(TrialContext(suite=suite, sampler=None, params=None,
                                              grid=None, seed=0, samples=torch.empty(0)))
    assert solved_in == [torch.float64] and values["nll_num_points"] == 2
