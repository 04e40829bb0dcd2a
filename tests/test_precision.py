"""`harness.models.precision`: the network in bf16/fp16/fp32 or compiled; state dtype and NFE kept."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from harness import CountedModel, ParameterError, generate, make_grid
from harness.models.oracle import ring_2d
from harness.plugin.manager import get_sampler
from harness.models.precision import NetworkPrecision, configure_model, describe
from harness.core.sde import EDMSDE

from .tiny_unet import tiny_digits_model


def _conv_output_dtypes(model) -> list[torch.dtype]:
    """Record the dtype every convolution of the network computes in."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


def _x(n: int = 6, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("state", [torch.float32, torch.float64])
def test_bf16_network_keeps_the_state_dtype_and_runs_convolutions_in_bf16(state):
    reference = tiny_digits_model().to(state)
    model = configure_model(tiny_digits_model().to(state), dtype="bf16")
    convs = _conv_output_dtypes(model)
    x = _x(dtype=state)
    out = model.denoise(x, 2.0)
    assert out.dtype == state
    assert convs and set(convs) == {torch.bfloat16}
    expected = reference.denoise(x, 2.0)
    error = (out - expected).abs().max() / expected.abs().max()
    # bf16 has 8 bits of mantissa: wrong by more than float32 rounding, far less than 1.
    assert 1e-5 < error < 5e-2


def test_fp16_network_on_the_cpu():
    model = configure_model(tiny_digits_model(), dtype="fp16")
    convs = _conv_output_dtypes(model)
    x = _x()
    out = model.score(x, 1.5)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert set(convs) == {torch.float16}
    torch.testing.assert_close(out, tiny_digits_model().score(x, 1.5), rtol=5e-2, atol=5e-2)


def test_fp32_network_under_a_float64_state_computes_in_float32():
    model = configure_model(tiny_digits_model(), dtype="fp32").to(torch.float64)
    convs = _conv_output_dtypes(model)
    x = _x(dtype=torch.float64)
    out = model.denoise(x, 0.5)
    assert out.dtype == torch.float64
    assert set(convs) == {torch.float32}
    expected = tiny_digits_model().to(torch.float64).denoise(x, 0.5)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_moving_the_model_to_float64_does_not_undo_the_chosen_precision():
    model = configure_model(tiny_digits_model(), dtype="bf16").to(torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.dtype == torch.float32  # hence callers pass the state dtype explicitly
    x = generate(model, get_sampler("heun"), make_grid(model.sde, "karras", 3), seed=0,
                 indices=range(4), dtype=torch.float64)
    assert x.dtype == torch.float64 and torch.isfinite(x).all()


@pytest.mark.parametrize("name", ["euler", "heun", "predictor_corrector"])
def test_nfe_is_counted_at_the_model_boundary_as_before(name):
    sampler = get_sampler(name)
    plain, configured = (CountedModel(tiny_digits_model()),
                         CountedModel(configure_model(tiny_digits_model(), dtype="bf16")))
    for model in (plain, configured):
        grid = make_grid(model.sde, "karras", 4)
        generate(model, sampler, grid, seed=0, indices=range(5))
    assert (configured.nfe.calls, configured.nfe.rows) == (plain.nfe.calls, plain.nfe.rows)
    assert configured.nfe.rows == 5 * sampler.expected_nfe(4, sampler.make_params())


def test_configuring_again_replaces_the_earlier_choice():
    model = configure_model(tiny_digits_model(), dtype="bf16")
    configure_model(model, dtype="fp16")
    assert isinstance(model.network, NetworkPrecision)
    assert not isinstance(model.network.network, NetworkPrecision)
    assert describe(model)["network_dtype"] == "fp16"
    configure_model(model, dtype="fp32")
    described = describe(model)
    assert (described["network_dtype"], described["network_autocast"],
            described["network_compiled"]) == ("fp32", False, False)


def test_models_without_a_network_are_refused_unless_left_alone():
    oracle = ring_2d(EDMSDE())
    assert configure_model(oracle) is oracle
    with pytest.raises(ParameterError, match="no network module"):
        configure_model(oracle, dtype="bf16")
    with pytest.raises(ParameterError, match="network dtype must be one of"):
        configure_model(tiny_digits_model(), dtype="float16")


def test_compile_keeps_outputs_and_nfe():
    """torch.compile through the wrapper (the `eager` backend: Dynamo's capture, no
    code generation, so the test stays fast on any machine)."""
    model = configure_model(tiny_digits_model(), dtype="bf16", compile=True,
                            compile_options={"backend": "eager"})
    eager = configure_model(tiny_digits_model(), dtype="bf16")
    assert describe(model)["network_compiled"]
    x = _x()
    counted = CountedModel(model)
    torch.testing.assert_close(counted.denoise(x, 1.0), eager.denoise(x, 1.0))
    assert counted.nfe.calls == 1


@pytest.mark.skipif(os.environ.get("HARNESS_TEST_INDUCTOR") != "1",
                    reason="inductor's C++ code generation took ~290 s for this model on "
                           "the 2-core CI machine (budget 30 s); set HARNESS_TEST_INDUCTOR=1")
def test_compile_with_inductor():
    """The default backend, generating code: the same outputs as the eager network."""
    model = configure_model(tiny_digits_model(), compile=True)
    x = _x()
    torch.testing.assert_close(model.denoise(x, 1.0), tiny_digits_model().denoise(x, 1.0),
                               rtol=1e-4, atol=1e-5)
