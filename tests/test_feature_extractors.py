"""The Inception and DINOv2 feature spaces give what the reference pipelines give.

The real weights cannot be downloaded here, so the checks run on randomly initialised
networks of the real architecture: a user with the real weights gets the reference
pipeline's features when (1) the harness's preprocessing equals the reference's, (2)
its network computes what the official network computes from the same weights, and
(3) it takes the official file's parameters, names and shapes. Each is compared with an
independent version written in this file from the reference code's formulas: EDM's
`(x * 127.5 + 128).clip(0, 255)` to uint8 in numpy, EDM2's `DINOv2Detector` resize and
normalisation, and a DINOv2 forward pass spelt out with explicit matrix products,
softmax, layer norms and the official position-embedding interpolation (scale factor
(grid + 0.1) / trained grid). A weights file whose sha256 differs from the expected one
is refused before it is loaded.
"""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import ParameterError
from harness.metrics import fid
from harness.metrics.dinov2 import VIT_L14, DINOv2, ViTConfig, dinov2_input, load_dinov2
from harness.metrics.feature_space import FEATURE_SPACE_DEFAULTS, feature_space
from harness.metrics.pixels import edm_uint8

#: A small DINOv2 with the full-size code path: its trained grid (5 x 5) differs from
#: the 16 x 16 grid of a 224 x 224 input, so the position embeddings are interpolated.
TINY = ViTConfig(width=32, depth=2, heads=4, grid=5)


def samples(n=3, channels=3, size=20, seed=0):
    """Samples in [-1, 1] and a little beyond (clipping), with the values j / 127.5 that
    fall on the boundaries between levels (where rounding conventions differ)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=gen) * 2.2 - 1.1
    x.view(-1)[:255] = torch.arange(-127, 128) / 127.5
    return x


def edm_uint8_numpy(x: torch.Tensor) -> np.ndarray:
    """EDM generate.py: (x * 127.5 + 128).clip(0, 255).to(uint8), grey repeated to RGB."""
    images = np.clip(x.numpy().astype(np.float32) * np.float32(127.5) + np.float32(128),
                     0, 255).astype(np.uint8)
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


def edm2_dinov2_input(x: torch.Tensor) -> torch.Tensor:
    """EDM2's DINOv2Detector (resize_mode 'torch') on the EDM-quantised images."""
    images = torch.from_numpy(edm_uint8_numpy(x)).to(torch.float32)
    images = F.interpolate(images, size=(224, 224), mode="bicubic", antialias=True)
    images = images.to(torch.float32) / 255
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, -1, 1, 1)
    return (images - torch.from_numpy(mean)) / torch.from_numpy(std)


def random_state(config: ViTConfig, seed=0) -> dict[str, torch.Tensor]:
    """Random values for every parameter, layer scales and norms included (not 1 or 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in DINOv2(config).state_dict().items()}
    return {name: 0.3 * torch.randn(shape, generator=gen) + (name.endswith(".weight")
                                                             and "norm" in name)
            for name, shape in shapes.items()}


def reference_forward(state, config: ViTConfig, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's class token after the final norm, from its state dict, spelt out."""
    def layer_norm(t, prefix):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-6) * state[prefix + ".weight"] + state[
            prefix + ".bias"]

    def linear(t, prefix):
        return t @ state[prefix + ".weight"].T + state[prefix + ".bias"]

    n, p, d = x.shape[0], config.patch, config.width
    rows, cols = x.shape[2] // p, x.shape[3] // p
    patches = x.reshape(n, 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, rows * cols, 3 * p * p)
    tokens = patches @ state["patch_embed.proj.weight"].reshape(d, -1).T
    tokens = tokens + state["patch_embed.proj.bias"]
    tokens = torch.cat([state["cls_token"].expand(n, 1, d), tokens], dim=1)
    # vision_transformer.py, interpolate_pos_encoding, with interpolate_offset = 0.1.
    m = config.grid
    grid = state["pos_embed"][:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m),
                         mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (rows, cols)
    pos = torch.cat([state["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, d)],
                    dim=1)
    tokens = tokens + pos
    heads, head_dim = config.heads, d // config.heads
    for i in range(config.depth):
        b = f"blocks.{i}"
        qkv = linear(layer_norm(tokens, b + ".norm1"), b + ".attn.qkv")
        q, k, v = (part.reshape(n, -1, heads, head_dim).transpose(1, 2)
                   for part in qkv.split(d, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, -1, d)
        tokens = tokens + state[b + ".ls1.gamma"] * linear(attended, b + ".attn.proj")
        hidden = linear(layer_norm(tokens, b + ".norm2"), b + ".mlp.fc1")
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        tokens = tokens + state[b + ".ls2.gamma"] * linear(hidden, b + ".mlp.fc2")
    return layer_norm(tokens, "norm")[:, 0]


def test_samples_are_quantised_as_edm_saves_them():
    for channels in (1, 3):
        x = samples(channels=channels)
        assert np.array_equal(edm_uint8(x).numpy(), edm_uint8_numpy(x))


def test_inception_sees_edms_uint8_images():
    seen = {}
    wrapper = fid._InceptionInput(lambda images: seen.setdefault("images", images))
    x = samples(channels=1)
    wrapper(x)
    assert seen["images"].dtype == torch.uint8
    assert np.array_equal(seen["images"].numpy(), edm_uint8_numpy(x))


def test_inception_is_built_with_the_reference_resize(tmp_path):
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    weights.write_bytes(b"stand-in")
    inception = mock.MagicMock(name="NoTrainInceptionV3")
    with mock.patch("torchmetrics.image.fid.NoTrainInceptionV3", inception):
        extractor = fid.inception_extractor(weights)
    # TF1's bilinear resize as the reference graph does it: torchmetrics' antialias off.
    assert inception.call_args.kwargs["antialias"] is False
    assert "TF1 bilinear" in extractor.preprocess and "edm_uint8" in extractor.preprocess
    assert extractor.weights_sha256 == hashlib.sha256(b"stand-in").hexdigest()


def test_dinov2_preprocessing_is_edm2s():
    x = samples(size=32)
    torch.testing.assert_close(dinov2_input(x), edm2_dinov2_input(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_dinov2_features_equal_the_reference_forward_on_random_weights(tmp_path, suffix):
    state = random_state(TINY)
    path = tmp_path / f"dinov2_tiny{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    extractor = load_dinov2(path, TINY)
    x = samples(n=2, size=28)
    with torch.no_grad():
        ours = extractor(x)
        theirs = reference_forward(state, TINY, edm2_dinov2_input(x))
    assert ours.shape == (2, TINY.width)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert extractor.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_full_size_vitl14_has_the_official_parameters():
    """facebookresearch/dinov2 `vit_large` with hub/backbones.py's settings (patch 14,
    img_size 518, init_values 1.0, block_chunks 0, no registers): 304,368,640 numbers."""
    d, hidden = 1024, 4096
    expected = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + 37 * 37, d),
                "mask_token": (1, d), "patch_embed.proj.weight": (d, 3, 14, 14),
                "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(24):
        expected.update({f"blocks.{i}.{name}": shape for name, shape in {
            "norm1.weight": (d,), "norm1.bias": (d,),
            "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
            "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "ls1.gamma": (d,),
            "norm2.weight": (d,), "norm2.bias": (d,),
            "mlp.fc1.weight": (hidden, d), "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,),
            "ls2.gamma": (d,)}.items()})
    with torch.device("meta"):
        network = DINOv2(VIT_L14)
    ours = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    assert ours == expected
    assert sum(math.prod(shape) for shape in ours.values()) == 304_368_640


def test_a_state_dict_without_every_official_parameter_is_refused(tmp_path):
    state = random_state(TINY)
    del state["blocks.1.ls2.gamma"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="ls2.gamma"):
        load_dinov2(tmp_path / "partial.pth", TINY)


def suite_with(**options):
    return SimpleNamespace(cache={}, device="cpu", model_name="stand-in", model=None), {
        **FEATURE_SPACE_DEFAULTS, **options}


@pytest.mark.parametrize("kind", ["dinov2", "inception"])
def test_weights_with_another_sha256_are_refused_before_loading(tmp_path, kind):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not the expected network")
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    suite, opts = suite_with(extractor=kind, **{f"{kind}_weights": str(weights),
                                                f"{kind}_sha256": "0" * 64})
    with pytest.raises(ParameterError, match=f"sha256 {actual}, not the expected 0000"):
        feature_space(suite, opts)
    # With the right hash the same file gets as far as being read: the check came first.
    suite, opts = suite_with(extractor=kind, **{f"{kind}_weights": str(weights),
                                                f"{kind}_sha256": actual.upper()})
    with pytest.raises(Exception) as err:
        feature_space(suite, opts)
    assert not isinstance(err.value, ParameterError)


def test_dinov2_needs_a_local_weights_file():
    suite, opts = suite_with(extractor="dinov2")
    with pytest.raises(ParameterError, match="dinov2_weights = PATH"):
        feature_space(suite, opts)


def test_dinov2_through_the_feature_space_is_float64_and_names_its_preprocessing(tmp_path):
    path = tmp_path / "dinov2_tiny.pth"
    torch.save(random_state(TINY), path)
    with mock.patch("harness.metrics.feature_space.load_dinov2",
                    lambda weights, expected_sha256: load_dinov2(weights, TINY,
                                                                 expected_sha256)):
        suite, opts = suite_with(extractor="dinov2", dinov2_weights=str(path))
        kind, extractor = feature_space(suite, opts)
    assert kind == "dinov2" and extractor.num_features == TINY.width
    assert extractor(samples(n=2)).dtype == torch.float64
    assert "bicubic" in extractor.preprocess and "edm_uint8" in extractor.preprocess
    # The feature space is the weights and the preprocessing, not the file alone.
    assert extractor.sha256 != extractor.weights_sha256
