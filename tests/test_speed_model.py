"""The benchmark-only model `untrained-unet-32`: a network of the size the field
benchmarks, and refused by every metric of quality, before anything is computed.

The expectations are independent of the code: the parameter range is that of the
published CIFAR-10 networks (35-60 M: DDPM's is 35.7 M), the zero-initialised layers are
checked by what an untrained identity would return (c_skip x), and the refusals by what
the user reads.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness import ModelSpec, ParameterError, hookimpl
from harness.bench.configuration.suite import SuiteError, build_suite
from harness.bench.running.plan import resolve_plan
from harness.models.speed_unet import CONFIG, untrained_unet_32
from harness.models.unet import SelfAttention, UNetConfig
from harness.plugin import manager as plugin_manager
from harness.testing import check_metric
from harness_plugins import speed_models

from tests.bench_support import harness

#: The same layout, narrow: seconds, for what does not depend on the width.
TINY = dataclasses.replace(CONFIG, channels=(16, 32, 32, 32), blocks=1, emb_dim=64,
                           groups=8)


class _UntrainedButUndeclared:
    """A spec that does not say its model is untrained (the loaded model does)."""

    harness_api_version = 1

    @staticmethod
    @hookimpl
    def harness_register_models(register):
        register(ModelSpec("undeclared-untrained",
                           lambda device="cpu": untrained_unet_32(device, config=TINY)))


@pytest.fixture(scope="module")
def loaded():
    """The installed plugins with `speed_models` as this worktree has it (whether or not
    its entry point is installed yet) and a spec that hides the flag."""
    plugins = plugin_manager.load_plugins(
        disabled=["speed_models"],
        extra=[("speed_models_here", speed_models),
               ("undeclared", _UntrainedButUndeclared())])
    assert not plugins.failures, plugins.failures
    return plugins


def test_the_network_has_the_size_of_the_cifar10_networks():
    model = untrained_unet_32()
    parameters = sum(p.numel() for p in model.parameters())
    assert 35e6 <= parameters <= 60e6, parameters
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.denoise(x, 2.0)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_weights_are_reproducible_and_no_layer_is_left_at_zero():
    first, second = untrained_unet_32(config=TINY), untrained_unet_32(config=TINY)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    zero = [name for name, p in first.named_parameters() if p.ndim == 4 and not p.any()]
    assert not zero, zero
    # An untrained EDM U-Net with its zero output layer would return c_skip(sigma) x.
    x, sigma, sigma_data = torch.randn(2, 3, 32, 32), 1.5, TINY.sigma_data
    with torch.no_grad():
        out = first.denoise(x, sigma)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    assert (out - c_skip * x).abs().max() > 1e-3


def test_self_attention_runs_at_16x16_and_in_the_middle_only():
    """DDPM++'s placement: after every residual block at 16x16 (the harness's U-Net has
    as many on the way up as down), and once at the lowest resolution."""
    model = untrained_unet_32(config=TINY)
    sides: list[int] = []
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.register_forward_hook(lambda m, args, out: sides.append(out.shape[-1]))
    with torch.no_grad():
        model.denoise(torch.randn(1, 3, 32, 32), 1.0)
    blocks = TINY.blocks
    assert sorted(sides) == [4] + [16] * (2 * blocks)
    assert UNetConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_registered_as_an_untrained_benchmark_only_model(loaded):
    spec = loaded.models.get("untrained-unet-32")
    assert spec.trained is False
    assert "UNTRAINED" in spec.description and "speed" in spec.description


def test_quality_metrics_are_refused_with_a_message_naming_model_and_metrics(loaded):
    raw = {"model": "untrained-unet-32", "steps": [2], "num_samples": 4,
           "samplers": {"euler": {}}, "metrics": {"fid": {}, "nll": {}}}
    with pytest.raises(SuiteError) as refusal:
        build_suite(raw, loaded, source="speed.toml")
    message = str(refusal.value)
    for part in ("speed.toml", "metrics", "'untrained-unet-32'", "untrained",
                 "fid, nll are refused", "Allowed: metrics of cost alone",
                 "wall-clock"):
        assert part in message, (part, message)
    # Without metrics the suite is a timing run, and is accepted.
    assert build_suite({**raw, "metrics": {}}, loaded).model == "untrained-unet-32"


def test_every_installed_metric_is_refused(loaded):
    """The built-ins all compare with data or the model's distribution."""
    for name in loaded.metrics.names():
        raw = {"model": "untrained-unet-32", "steps": [2], "num_samples": 4,
               "samplers": {"euler": {}}, "metrics": {name: {}}}
        with pytest.raises(SuiteError, match=f"{name} is refused"):
            build_suite(raw, loaded)


def test_a_run_is_refused_before_the_model_loads(loaded, tmp_path, monkeypatch, capsys):
    import harness.commands.run as run_command

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(plugin_manager, "_default", loaded)
    monkeypatch.setattr(run_command, "load_model", no_model)
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "speed.toml"
    suite.write_text('model = "untrained-unet-32"\nsteps = [2]\nnum_samples = 4\n'
                     'device = "cpu"\n[samplers.euler]\n[metrics.kid]\n')
    assert harness("run", str(suite), "--out", str(tmp_path / "out")) == 2
    assert "'untrained-unet-32' has untrained" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_loaded_model_is_checked_too_before_any_sampling(loaded):
    """A spec that did not declare it: `resolve_plan` reads the loaded model's flag."""
    raw = {"model": "undeclared-untrained", "steps": [2], "num_samples": 4,
           "samplers": {"euler": {}}, "metrics": {"fid": {}}}
    suite = build_suite(raw, loaded)
    model = loaded.models.get("undeclared-untrained").build("cpu")
    with pytest.raises(SuiteError, match="'undeclared-untrained' has untrained"):
        resolve_plan(suite, loaded, model, torch.device("cpu"), guard_memory=False)
    timing_only = build_suite({**raw, "metrics": {}}, loaded)
    plan = resolve_plan(timing_only, loaded, model, torch.device("cpu"), guard_memory=False)
    assert [run.trial.sampler for run in plan.sampler_runs] == ["euler"]


def test_the_metric_kit_refuses_to_measure_quality_on_it():
    with pytest.raises(ParameterError, match="fid is refused"):
        check_metric("fid", model=untrained_unet_32(config=TINY))
