"""DINOv2 ViT-L/14 features (FD_DINOv2, Stein et al. 2023; EDM2, Karras et al. 2024).

The network is DINOv2's vision transformer (Oquab et al. 2023) written here, so that
its weights load from a local copy of the official file (`dinov2_vitl14_pretrain.pth`)
with `torch.load(weights_only=True)`, no code unpickled and nothing downloaded. Its
parameter names and shapes are the official ones (facebookresearch/dinov2,
`models/vision_transformer.py` with `hub/backbones.py`'s settings: patch 14, trained at
518 x 518 so a 37 x 37 position grid, layer scale, no registers, blocks unchunked):

    cls_token (1, 1, D), pos_embed (1, 1 + 37^2, D), mask_token (1, D),
    patch_embed.proj (D, 3, 14, 14), blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma,
    norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm            (D = 1024, 24 blocks, 16 heads)

A block is x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x)); layer norms have
eps 1e-6, the MLP's activation is the exact GELU. At 224 x 224 the grid is 16 x 16 and
the position embeddings are resized from 37 x 37 as the official code does: bicubic,
no antialias, with scale factor (16 + 0.1) / 37 rather than an output size (its
"interpolate_offset", kept for compatibility with the trained weights), in float32.
The feature is the class token after the final norm (what the hub model returns).

Preprocessing is EDM2's (`calculate_metrics.py`, `DINOv2Detector`, resize_mode "torch",
modelled on dgm-eval): 8-bit images (`harness.metrics.pixels.edm_uint8`) as float32,
resized to 224 x 224 by bicubic interpolation with antialias (values not clamped), then
divided by 255 and normalised with ImageNet's mean (0.485, 0.456, 0.406) and standard
deviation (0.229, 0.224, 0.225). dgm-eval's own resize (PIL bicubic on the uint8 image,
EDM2's resize_mode "pil") gives almost the same features and is not offered here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fid import checked_sha256
from .pixels import EDM_UINT8, edm_uint8

#: The logged name of the preprocessing below.
PREPROCESS = f"{EDM_UINT8}, bicubic antialiased resize to 224, ImageNet mean/std (EDM2)"
RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The official code's offset of the position-embedding scale factor.
INTERPOLATE_OFFSET = 0.1


@dataclass(frozen=True)
class ViTConfig:
    """The sizes of a DINOv2 vision transformer; `grid` is its trained position grid."""

    width: int
    depth: int
    heads: int
    patch: int = 14
    grid: int = 37
    mlp_ratio: int = 4


VIT_L14 = ViTConfig(width=1024, depth=24, heads=16)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention from one fused qkv projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        dim = config.width
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, config.heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, config.mlp_ratio * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, config.patch, stride=config.patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DINOv2(nn.Module):
    """The DINOv2 backbone: normalised images (N, 3, H, W) -> class tokens (N, width)."""

    def __init__(self, config: ViTConfig = VIT_L14):
        super().__init__()
        self.config = config
        dim = config.width
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid ** 2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training only; in the file
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding(self, rows: int, columns: int) -> Tensor:
        """(1, 1 + rows * columns, width): the trained grid's, resized as DINOv2 does."""
        grid = self.config.grid
        if (rows, columns) == (grid, grid):
            return self.pos_embed
        pos = self.pos_embed.float()
        patches = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + INTERPOLATE_OFFSET) / grid, (columns + INTERPOLATE_OFFSET) / grid)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic",
                                antialias=False)
        patches = patches.permute(0, 2, 3, 1).reshape(1, rows * columns, -1)
        return torch.cat([pos[:, :1], patches], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: Tensor) -> Tensor:
        rows, columns = x.shape[2] // self.config.patch, x.shape[3] // self.config.patch
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(rows, columns)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def dinov2_input(x: Tensor) -> Tensor:
    """Samples (N, C, H, W) in [-1, 1] -> DINOv2's input as EDM2 makes it (module doc)."""
    images = edm_uint8(x).float()
    images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bicubic",
                           antialias=True)
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images / 255 - mean) / std


class DINOv2Features(nn.Module):
    """Samples in [-1, 1] -> DINOv2 class tokens, float32; `Float64Features` wraps it.

    `weights_sha256` names the weights file, `sha256` the feature space (the weights and
    the preprocessing): what the reference cache is keyed by.
    """

    preprocess = PREPROCESS

    def __init__(self, network: DINOv2, weights_sha256: str):
        super().__init__()
        self.network = network
        self.num_features = network.config.width
        self.weights_sha256 = weights_sha256
        self.sha256 = hashlib.sha256(f"dinov2\n{PREPROCESS}\n{weights_sha256}".encode()
                                     ).hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        return self.network(dinov2_input(x))


def load_dinov2(weights_path: Union[str, Path], config: ViTConfig = VIT_L14,
                expected_sha256: Optional[str] = None) -> DINOv2Features:
    """DINOv2 features from a local weights file (a state dict: `.pth` or `.safetensors`),
    refused before loading when its sha256 is not `expected_sha256` (if given).

    The network is built on the meta device and takes the file's tensors as they are
    (no random initialisation of 300 M parameters first); every official parameter must
    be there with its shape, and nothing else.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 weights not found at {path}; this harness never "
                                f"downloads them: pass a local file")
    weights_sha256 = checked_sha256(path, expected_sha256, "DINOv2")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        network = DINOv2(config)
    network.load_state_dict(state, strict=True, assign=True)
    return DINOv2Features(network.eval(), weights_sha256)
