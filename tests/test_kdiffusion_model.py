"""A k-diffusion image_v1 model from its training config and weights, through the
registered model `kdiffusion`, against k-diffusion's own `Denoiser` wrapper.

The network is a tiny image_v1 with every parameter drawn at random (k-diffusion zeroes
the output projection at initialisation, which would hide the network behind c_skip x).
The expectation is k-diffusion's `layers.Denoiser` (its c_skip, c_out, c_in) around the
same network class given the EMA weights and the augmentation wrapper's zero inputs.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from harness.core.counting import CountedModel
from harness.core.sde import EDMSDE
from harness.errors import ParameterError
from harness.models.checkpoint import CheckpointError, ChecksumError, file_sha256
from harness.models.kdiffusion_model import PRIVATE, image_v1_module
from harness.plugin.manager import load_plugins

pytest.importorskip("einops")  # imported by k-diffusion's layers.py
if importlib.util.find_spec("k_diffusion") is None:
    pytest.skip("k-diffusion is not installed", allow_module_level=True)

CONFIG = {"model": {"type": "image_v1", "input_channels": 3, "input_size": [8, 8],
                    "mapping_out": 16, "depths": [1, 1], "channels": [8, 16],
                    "self_attn_depths": [False, True], "sigma_data": 0.5,
                    "sigma_min": 0.01, "sigma_max": 40.0},
          "dataset": {"type": "imagefolder"}}


def _random_state(seed):
    """An image_v1 state dict with every tensor random, keyed as k-diffusion's training
    checkpoint keys it (the augmentation wrapper's `inner_model.` prefix)."""
    torch.manual_seed(seed)
    net = image_v1_module().ImageDenoiserModelV1(
        3, 16, [1, 1], [8, 16], [False, True], mapping_cond_dim=9)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.copy_(0.3 * torch.randn_like(tensor))
    return {f"inner_model.{k}": v for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A training checkpoint as k-diffusion's train.py writes it, and its config."""
    folder = tmp_path_factory.mktemp("kdiffusion")
    ema, live = _random_state(0), _random_state(1)
    torch.save({"config": CONFIG, "model": live, "model_ema": ema, "step": 10,
                "opt": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
               folder / "model_00000010.pth")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder, ema


def _build(**options):
    return load_plugins().models.get("kdiffusion").build("cpu", **options)


def _kdiffusion_denoiser(state):
    """k-diffusion's Denoiser around its network with these weights; the 9 zero mapping
    inputs are what KarrasAugmentWrapper passes without augmentation."""
    net = image_v1_module().ImageDenoiserModelV1(
        3, 16, [1, 1], [8, 16], [False, True], mapping_cond_dim=9)
    net.load_state_dict({k.removeprefix("inner_model."): v for k, v in state.items()})

    class ZeroAugmentation(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner_model = net

        def forward(self, x, sigma):
            return self.inner_model(x, sigma, mapping_cond=x.new_zeros(x.shape[0], 9))

    layers = sys.modules[f"{PRIVATE}.layers"]
    return layers.Denoiser(ZeroAugmentation(), sigma_data=0.5).eval()


def test_denoiser_is_kdiffusions_preconditioned_ema_network(saved):
    folder, ema = saved
    model = _build(path=str(folder / "model_00000010.pth"))
    assert isinstance(model.sde, EDMSDE)
    assert (model.sde.sigma_min, model.sde.sigma_max) == (0.01, 40.0)
    assert tuple(model.data.shape) == (3, 8, 8)
    x = 5 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.02, 0.7, 30.0])
    counted = CountedModel(model)
    with torch.no_grad():
        got = counted.denoise(x, sigma)
        expected = _kdiffusion_denoiser(ema)(x, sigma)
    assert counted.nfe.calls == 1
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    skip_alone = x * (0.25 / (sigma**2 + 0.25)).view(-1, 1, 1, 1)
    assert (got - skip_alone).abs().amax() > 0.1  # the network's share is not nil


def test_safetensors_weights_with_a_separate_config_load_alike(saved, tmp_path):
    from safetensors.torch import save_file

    folder, ema = saved
    save_file(ema, tmp_path / "model.safetensors")
    from_pth = _build(path=str(folder / "model_00000010.pth"))
    from_safetensors = _build(path=str(tmp_path / "model.safetensors"),
                              config=str(folder / "config.json"))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(from_pth.denoise(x, 1.5), from_safetensors.denoise(x, 1.5))
    with pytest.raises(CheckpointError, match="no k-diffusion config"):
        _build(path=str(tmp_path / "model.safetensors"))


def test_a_wrong_hash_is_refused_and_a_right_one_loads(saved):
    folder, _ = saved
    path = folder / "model_00000010.pth"
    right = file_sha256(path)
    assert _build(path=str(path), sha256=right.upper()) is not None
    with pytest.raises(ChecksumError, match=f"{right}, not the pinned {'0' * 64}"):
        _build(path=str(path), sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"weights not found.*holds: .*config\.json"):
        _build(path=str(folder / "model_missing.pth"))


class Payload:
    """A class a pickle would have to import: what weights_only loading refuses."""


def test_a_checkpoint_holding_more_than_tensors_is_refused(tmp_path):
    torch.save({"config": CONFIG, "model": Payload()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="weights_only loading refused it"):
        _build(path=str(tmp_path / "code.pth"))


def test_unsupported_configurations_are_refused_by_name(tmp_path):
    for change, message in (({"type": "image_transformer_v1"}, "only 'image_v1'"),
                            ({"unet_cond_dim": 4}, "unet_cond_dim > 0")):
        config = {**CONFIG, "model": {**CONFIG["model"], **change}}
        torch.save({"config": config, "model_ema": _random_state(0)}, tmp_path / "m.pth")
        with pytest.raises(ParameterError, match=message):
            _build(path=str(tmp_path / "m.pth"))
