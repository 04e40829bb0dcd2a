"""A small U-Net denoiser for 1x8x8 images with the EDM preconditioning.

The raw network F(x_in, c_noise) is a DDPM-style U-Net (Ho et al. 2020; layout of the
DDPM++ network of Song et al. 2021 as used by Karras et al. 2022, scaled down):
residual blocks with GroupNorm and SiLU, the noise embedding injected into every block as
a per-channel scale and shift ("adaptive GroupNorm"), self-attention at the lowest
resolution, skip connections by concatenation, 8x8 -> 4x4 -> 8x8 for the default two
levels. `attention_resolutions` adds self-attention after every residual block of the
levels at those resolutions too (16 for the 32x32 networks of Ho et al. and Song et al.).

With `num_classes = K > 0` the network is class-conditional (classifier-free guidance, Ho &
Salimans 2022): an embedding of K + 1 rows, the last one the "null" class that label
dropout trains as the unconditional model, is added to the noise embedding before the
blocks read it (as in the ADM network of Dhariwal & Nichol 2021). Labels are 0 .. K - 1,
and `NULL_LABEL` (-1) selects the null row. `num_classes = 0` (the default) builds no
embedding at all: the unconditional network, its parameters and its outputs are those of
a configuration without the field.

`EDMPrecond` wraps it into the denoiser of Karras et al. (2022, Sec. 5 and Table 1):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2),
    c_noise = ln(sigma) / 4,

which keeps the network's input and its training target at unit variance for every
noise level. sigma_data is the standard deviation of the training pixels in the [-1, 1]
scale (`harness.models.digits.data_std("train")` = 0.752), rounded to 0.75; Karras et al. use
0.5 for CIFAR-10, whose pixels are spread more evenly.

The wrapper returns the x_0 prediction D, so it plugs into
``NetworkScoreModel(EDMPrecond(...), EDMSDE(), DIGITS_SPEC, parametrization="x0",
condition=lambda t, sigma: sigma)`` (on the EDM SDE t = sigma and s = 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.model import NULL_LABEL

ARCHITECTURE = "harness.unet.EDMPrecond/v1"  # an identifier stored in manifests, not a module path


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters that rebuild the network; recorded in the checkpoint manifest.

    `channels[i]` is the width at level i (resolution image_size / 2^i); `blocks` is the
    number of residual blocks per level on the way down (the way up has the same number,
    each fed one skip connection). `attention` adds one self-attention layer (with a
    residual block either side) at the lowest resolution; `attention_resolutions` lists
    the resolutions (image side in pixels) whose residual blocks are each followed by
    one, on the way down and up.
    """

    in_channels: int = 1
    image_size: int = 8
    channels: tuple[int, ...] = (32, 64)
    blocks: int = 1
    attention: bool = True
    emb_dim: int = 128
    #: Number of frequencies of the sinusoidal noise embedding, geometric in
    #: [1, max_frequency] (radians per unit of c_noise).
    num_frequencies: int = 32
    max_frequency: float = 64.0
    groups: int = 8
    dropout: float = 0.1
    sigma_data: float = 0.75
    #: Classes of a class-conditional network (plus one learned "null" class); 0: none.
    num_classes: int = 0
    attention_resolutions: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values. `num_classes` is left out when 0 and
        `attention_resolutions` when empty, so a config without them records exactly the
        keys it had before they existed."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        out["attention_resolutions"] = list(self.attention_resolutions)
        for key in ("num_classes", "attention_resolutions"):
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "UNetConfig":
        """Inverse of `to_dict`; unknown keys are an error so a manifest cannot drift."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {', '.join(unknown)}")
        values = dict(values)
        for key in ("channels", "attention_resolutions"):
            if key in values:
                values[key] = tuple(int(c) for c in values[key])
        return cls(**values)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise at fixed geometric frequencies, then a 2-layer MLP.

    Frequencies are fixed (not random Fourier features, Tancik et al. 2020) so the module
    is a pure function of its config and the buffer need not be stored.
    """

    def __init__(self, num_frequencies: int, max_frequency: float, emb_dim: int):
        super().__init__()
        exponent = torch.linspace(0.0, 1.0, num_frequencies, dtype=torch.float64)
        freqs = max_frequency ** exponent
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = c_noise.float()[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class LabelEmbedding(nn.Module):
    """One learned vector per class and one for the null class (the last row).

    `forward(labels)` takes (B,) int64 labels in 0 .. num_classes - 1 or `NULL_LABEL`.
    A label equal to num_classes would silently read the null row; it is sent out of
    range instead, so that it fails like every other invalid label (no host sync).
    """

    def __init__(self, num_classes: int, emb_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, emb_dim)
        # Zeros: training starts from a label-blind network (like the zero-initialised
        # output layers) and learns each class's offset, rather than unlearning noise.
        nn.init.zeros_(self.table.weight)

    def forward(self, labels: Tensor) -> Tensor:
        n = self.num_classes
        index = torch.where(labels == NULL_LABEL, n, torch.where(labels == n, n + 1, labels))
        return self.table(index)

    def null(self) -> Tensor:
        """The null class's vector (emb_dim,): what every row of an unconditional call adds."""
        return self.table.weight[self.num_classes]


class ResBlock(nn.Module):
    """GN-SiLU-conv, adaptive GN with the embedding, SiLU-dropout-conv, plus a skip path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        # A block starts as (nearly) the identity, which keeps deep stacks trainable.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) / math.sqrt(2)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        out = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2)


class AttentionResBlock(nn.Module):
    """A residual block followed by self-attention over its output's pixels."""

    def __init__(self, block: ResBlock, channels: int, groups: int):
        super().__init__()
        self.res = block
        self.attn = SelfAttention(channels, groups)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """The raw network F(x_in, c_noise) -> (B, C, H, W); see the module docstring."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.image_size % 2 ** (len(cfg.channels) - 1):
            raise ValueError(f"image_size {cfg.image_size} does not halve "
                             f"{len(cfg.channels) - 1} times")

        def block(c_in: int, c_out: int, level: Optional[int] = None) -> nn.Module:
            res = ResBlock(c_in, c_out, cfg.emb_dim, cfg.groups, cfg.dropout)
            if level is None or cfg.image_size // 2**level not in cfg.attention_resolutions:
                return res
            return AttentionResBlock(res, c_out, cfg.groups)

        self.embed = NoiseEmbedding(cfg.num_frequencies, cfg.max_frequency, cfg.emb_dim)
        # Registered only when conditional: an unconditional state dict is unchanged.
        if cfg.num_classes:
            self.label_embed = LabelEmbedding(cfg.num_classes, cfg.emb_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.channels[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels: list[int] = []
        width = cfg.channels[0]
        for level, c in enumerate(cfg.channels):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(block(width, c, level))
                width = c
                skip_channels.append(width)
            self.down.append(blocks)
            if level < len(cfg.channels) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))

        self.mid1 = block(width, width)
        self.mid_attn = SelfAttention(width, cfg.groups) if cfg.attention else nn.Identity()
        self.mid2 = block(width, width) if cfg.attention else nn.Identity()

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(cfg.channels))):
            c = cfg.channels[level]
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(block(width + skip_channels.pop(), c, level))
                width = c
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))

        self.norm_out = nn.GroupNorm(min(cfg.groups, width), width)
        self.conv_out = nn.Conv2d(width, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """F(x, c_noise | labels); `labels` (B,) only for a conditional network, where
        None means every row unconditional (the null class)."""
        emb = self.embed(c_noise)
        if self.config.num_classes:
            emb = emb + (self.label_embed.null() if labels is None
                         else self.label_embed(labels))
        elif labels is not None:
            raise ValueError("this U-Net is unconditional (num_classes = 0): it takes no "
                             "labels")
        h = self.conv_in(x)
        skips: list[Tensor] = []
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.mid1(h, emb)
        if isinstance(self.mid2, ResBlock):
            h = self.mid2(self.mid_attn(h), emb)
        for level, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            if level < len(self.upsample):
                h = self.upsample[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class EDMPrecond(nn.Module):
    """The denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (Karras et al. 2022).

    `forward(x, sigma, labels=None)` takes unscaled x (B, C, H, W), sigma of shape (B,)
    (or a scalar) and, for a conditional network, (B,) labels (`NULL_LABEL` rows, or
    labels None, unconditional), and returns the x_0 prediction in the data's scale.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        self.sigma_data = float(self.config.sigma_data)
        self.net = UNet(self.config)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) for a (B,) tensor of noise levels."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: Tensor, sigma: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(-1)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        view = (-1,) + (1,) * (x.ndim - 1)
        out = self.net(c_in.view(view) * x, c_noise, labels)
        return c_skip.view(view) * x + c_out.view(view) * out.to(x.dtype)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
