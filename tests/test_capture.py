"""Captured sampling loops (`capture = "compiled"`): the same samples and the same counted
NFE as the eager loop, or the eager loop itself with the reason recorded.

The expectations are the eager sampler's own output and the counts of `CountedModel` around
the eager call; the captured side is compiled for real by inductor on the CPU (seconds per
sampler), and on CUDA as CUDA graphs (skipped without a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness import Capabilities, CountedModel, Sampler, generate, make_grid, make_sde
from harness.bench.configuration.suite import build_suite, load_suite, model_identity
from harness.bench.configuration.suite import resolve_trials
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.running.capture import CAPTURED_NOISE, CapturedDraw, CapturedLoop
from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.core.noise import SampleNoise
from harness.models.oracle import mixture_64d
from tests.bench_support import harness

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]
#: Two batches of 8 samples and a last one of 3, as a plan deals out 19 samples by 8.
BATCHES = [list(range(8)), list(range(8, 16)), list(range(16, 19))]


def _model(device="cpu", dtype=torch.float32):
    return mixture_64d(make_sde("vp")).to(device=device, dtype=dtype)


def _drawing(model, sampler, steps=3):
    """The runner's draw, unguided: sample `indices` on `network` through `sampler`."""
    grid = make_grid(model.sde, "karras", steps)

    def draw(indices, network, evaluations=None, sampler=sampler):
        return generate(network, sampler, grid, 0, indices, sampler.make_params(),
                        dtype=model.dtype)
    return draw


def _eager(model, sampler, batches, steps=3):
    """Every batch drawn eagerly on one counted model: the samples and the counter."""
    network = CountedModel(model)
    grid = make_grid(model.sde, "karras", steps)
    samples = [generate(network, sampler, grid, 0, b, dtype=model.dtype) for b in batches]
    return torch.cat(samples), network.nfe


def _captured(model, sampler, batches, device="cpu"):
    """Every batch through a prepared `CapturedDraw`: its mode, samples and counter."""
    captured = CapturedDraw(_drawing(model, sampler), CapturedLoop(sampler, device))
    mode = captured.prepare(model, batches)
    network = CountedModel(model)
    samples = torch.cat([captured(b, network, network.nfe) for b in batches])
    return mode, samples, network.nfe


def _assert_same_samples(captured, eager):
    # Rounding only (bound and measurements: `harness.bench.running.capture`).
    error = (captured - eager).norm(dim=1) / eager.norm(dim=1)
    assert float(error.max()) < 1e-4, float(error.max())


def _draws_inside_a_graph(backend, device="cpu"):
    """Draws 1 and 2 of four samples through `CapturableNoise` in one full graph on
    `device`, and the eager `SampleNoise`'s draws 1 and 2 of the same samples there."""
    from harness.bench.running.capture import CapturableNoise

    indices = [5, 6, 2**32 + 6, 2**63 + 9]  # both words of the index
    noise = SampleNoise(2**40 + 7, indices, (3, 5), device)  # 15 numbers: a counter cut
    noise()
    compiled = torch.compile(lambda n: [n(), n()], fullgraph=True, backend=backend)
    expected = [SampleNoise(2**40 + 7, indices, (3, 5), device).draw(k) for k in (1, 2)]
    return compiled(CapturableNoise(noise)), expected


def test_the_traced_noise_is_the_sample_noise_bit_for_bit_with_atens_functions():
    """Traced but run by ATen (aot_eager): the same counters, rounds and Box-Muller order
    as the eager draw, so the same bits."""
    got, expected = _draws_inside_a_graph("aot_eager")
    for draw, want in zip(got, expected):
        assert torch.equal(draw, want)


def test_the_traced_noise_compiled_by_inductor_is_the_sample_noise_to_float32_rounding():
    """Inductor's log, sqrt, cos and sin round differently from ATen's: a unit or two in
    the last place of float32 (6e-8 relative each) on some values, the rest the same."""
    got, expected = _draws_inside_a_graph("inductor")
    for draw, want in zip(got, expected):
        assert draw.shape == want.shape and draw.dtype == want.dtype
        relative = ((draw - want).abs() / want.abs()).max()
        assert float(relative) <= 3 * 2.0**-24, float(relative)
        assert float((draw == want).float().mean()) >= 0.5


@cuda
def test_on_cuda_the_traced_noise_compiled_by_triton_is_the_sample_noise_to_rounding():
    """On CUDA the traced draw runs in Triton (libdevice's log, sqrt, cos, sin) against
    ATen's CUDA functions: the same integers, so normals a few float32 units apart."""
    got, expected = _draws_inside_a_graph("inductor", "cuda")
    for draw, want in zip(got, expected):
        assert draw.device.type == "cuda" and draw.shape == want.shape
        relative = ((draw - want).abs() / want.abs()).max()
        assert float(relative) <= 8 * 2.0**-24, float(relative)


def test_a_traced_draw_number_out_of_range_is_refused():
    from harness.bench.running.capture import traced_normals

    index = torch.zeros((2, 2), dtype=torch.int64)
    with pytest.raises(ValueError, match="draw number must be in"):
        traced_normals(index, torch.zeros((10, 2), dtype=torch.int64), 2**32 - 1, 4,
                       torch.float32)


@pytest.mark.parametrize("name", ["euler", "euler_maruyama", "heun"])
def test_captured_and_eager_give_the_same_samples_and_counts(plugins, name):
    sampler = plugins.samplers.get(name)
    model = _model()
    batches = BATCHES[:2] if name != "euler" else BATCHES  # euler: a short last batch too
    mode, samples, counted = _captured(model, sampler, batches)
    eager, expected = _eager(model, sampler, batches)
    assert mode == "compiled (inductor)"
    _assert_same_samples(samples, eager)
    assert (counted.calls, counted.rows) == (expected.calls, expected.rows)
    assert expected.rows == sampler.expected_nfe(3, sampler.make_params()) * len(eager)


@pytest.mark.parametrize("name", ["euler_maruyama", "langevin"])
def test_a_float64_stochastic_loop_is_captured_within_its_noises_rounding(plugins, name):
    """In float64 the traced normals' float32 rounding is the bound (CAPTURE_RTOL, 1e-6),
    far above float64's own: the loop is still used, and still the eager one's samples."""
    sampler = plugins.samplers.get(name)
    model = _model(dtype=torch.float64)
    mode, samples, counted = _captured(model, sampler, BATCHES[:2])
    eager, expected = _eager(model, sampler, BATCHES[:2])
    assert mode == "compiled (inductor)"
    assert samples.dtype == eager.dtype == torch.float64
    error = (samples - eager).norm(dim=1) / eager.norm(dim=1)
    assert float(error.median()) < 1e-6, float(error.median())
    assert (counted.calls, counted.rows) == (expected.calls, expected.rows)


def _peeking(model, x, grid, noise, callback, params):
    """Euler, printing the largest |x| per step: a host read, which no graph holds."""
    t = grid.t
    for i in range(grid.steps):
        x = x + (t[i + 1] - t[i]) * model.ode_drift(x, t[i])
        print(f"step {i}: max |x| = {x.abs().max().item():.3f}")
    return x


def test_a_sampler_that_reads_the_host_runs_eagerly_saying_why(capsys):
    sampler = Sampler(name="peeking", fn=_peeking,
                      capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1))
    model = _model()
    mode, samples, counted = _captured(model, sampler, BATCHES[:2])
    eager, expected = _eager(model, sampler, BATCHES[:2])
    assert mode.startswith("eager (not capturable: Unsupported: "), mode
    assert "`print`" in mode and " at test_capture.py:" in mode, mode
    assert mode.endswith(" in _peeking)"), mode
    assert torch.equal(samples, eager)
    assert (counted.calls, counted.rows) == (expected.calls, expected.rows)


def test_a_captured_loop_that_would_differ_runs_eagerly_saying_why(plugins, monkeypatch):
    """A compiled loop giving wrong samples (here: one step too few) is never used."""
    sampler = plugins.samplers.get("euler")
    model = _model()

    def one_step_short(model, x, grid, noise, params):
        return sampler(model, x, make_grid(model.sde, "karras", 2), noise, None, params)

    loop = CapturedLoop(sampler, "cpu")
    monkeypatch.setattr(loop, "compiled", one_step_short)
    captured = CapturedDraw(_drawing(model, sampler), loop)
    mode = captured.prepare(model, BATCHES[:2])
    assert mode.startswith("eager (captured samples differ from eager ones: 90%"), mode
    network = CountedModel(model)
    samples = torch.cat([captured(b, network, network.nfe) for b in BATCHES[:2]])
    eager, expected = _eager(model, sampler, BATCHES[:2])
    assert torch.equal(samples, eager)
    assert (network.nfe.calls, network.nfe.rows) == (expected.calls, expected.rows)


def test_capture_off_keeps_the_recorded_config_hashes_and_compiled_changes_them(plugins):
    recorded = [json.loads(line) for line in
                (ROOT / "results" / "default" / "trials.jsonl").read_text().splitlines()]
    recorded = {r["name"]: r["config_hash"] for r in recorded
                if r["kind"] == "trial" and not r.get("floor")}
    hashes = {}
    for capture in ("off", "compiled"):
        suite = load_suite("default", plugins, {"capture": capture})
        model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
        hashes[capture] = {t.name: t.config_hash for t in
                           resolve_trials(suite, plugins, model_identity(suite, model))}
    assert hashes["off"] == recorded
    assert not set(hashes["compiled"].values()) & set(recorded.values())
    with pytest.raises(Exception, match="capture must be one of off, compiled"):
        load_suite("default", plugins, {"capture": "graphs"})


def test_the_command_line_option_reaches_the_suite(capsys):
    assert harness("run", "fast_oracle", "--dry-run", "--capture", "compiled") == 0
    assert '  capture = "compiled"\n' in capsys.readouterr().out


class Recorder:
    def suite_started(self, info):
        pass

    def trial_ended(self, result):
        self.result = result


def test_a_captured_trial_runs_through_the_runner_and_says_so(plugins):
    suite = build_suite({"model": "gmm-64d", "samplers": {"euler_maruyama": {}},
                         "steps": [3], "num_samples": 19, "batch_size": 8, "device": "cpu",
                         "metrics": {}, "capture": "compiled"}, plugins)
    device = torch.device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    recorder = Recorder()
    [result] = run_plan(plan, Sinks([recorder]), quiet=True)
    assert result.status == FINISHED, result.error
    assert result.params["capture"] == "compiled (inductor)"
    assert result.params["noise_backend"] == CAPTURED_NOISE
    assert result.params["noise_backend"].startswith("traced (")
    assert result.metrics["nfe"] == 3.0 and not result.warnings
    # One graph: no network time, hence no overhead ratio, rather than a made-up one.
    assert "network_s" not in result.metrics and "overhead_ratio" not in result.metrics


@cuda
@pytest.mark.parametrize("name", ["euler", "euler_maruyama", "heun"])
def test_cuda_graphs_give_the_same_samples_and_counts(plugins, name):
    sampler = plugins.samplers.get(name)
    model = _model("cuda")
    mode, samples, counted = _captured(model, sampler, BATCHES, device="cuda")
    eager, expected = _eager(model, sampler, BATCHES)
    assert mode == "compiled (inductor, CUDA graphs)"
    _assert_same_samples(samples.cpu(), eager.cpu())
    assert (counted.calls, counted.rows) == (expected.calls, expected.rows)
