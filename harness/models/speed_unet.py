"""A 3x32x32 U-Net of the size the field benchmarks on CIFAR-10, with untrained weights.

Speed, not quality: what a sampler costs beside its network depends on how long one
network call takes, and the 8x8 digits network is small enough (a few ms at batch 4096
on a GPU) for kernel launches to decide it. This network has the layout of DDPM++
(Song et al. 2021, score_sde's `cifar10_ddpmpp` configuration): 128 channels times
(1, 2, 2, 2) at 32, 16, 8 and 4 pixels, four residual blocks per level, self-attention
at 16x16 and in the middle. Built from the harness's own U-Net (`harness.models.unet`,
whose blocks differ in detail from DDPM++'s: as many on the way up as down, the noise
embedding as a scale and shift) it has 56.0 M parameters (DDPM's CIFAR-10 network:
35.7 M) and costs 18.3 GFLOP per sample and call.

The weights are drawn from a fixed seed, so every run times the same network (speed does
not depend on the values, but a run must be reproducible). The U-Net's zero
initialisations are undone here: its last convolution, the second convolution of every
residual block and the output of every attention layer start at zero there (a trainable
near-identity), which would make the untrained network return c_skip x and its residual
branches no-ops; every convolution is redrawn with PyTorch's default initialisation, so
each layer computes something.

The model is EDM-preconditioned on the EDM process (sigma in [0.002, 80], sigma_data 0.5),
the parametrisation of every k-diffusion sampler, so the harness's samplers and
k-diffusion's loops run on it unchanged and from the same x_T. It has no reference data
and `trained = False`: suites are refused every metric of quality or likelihood on it
(`harness.bench.configuration.check_trained`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.model import DataSpec, NetworkScoreModel
from ..core.sde import EDMSDE
from .unet import EDMPrecond, UNetConfig

#: DDPM++'s CIFAR-10 layout in the harness's U-Net (see the module docstring).
CONFIG = UNetConfig(in_channels=3, image_size=32, channels=(128, 256, 256, 256), blocks=4,
                    attention=True, attention_resolutions=(16,), emb_dim=512, groups=32,
                    dropout=0.0, sigma_data=0.5)
CIFAR_SPEC = DataSpec((3, 32, 32), (-1.0, 1.0), levels=256)
SEED = 0


class UntrainedScoreModel(NetworkScoreModel):
    """A score model whose network has random weights: for timing only."""

    trained = False


def _sigma_condition(t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The EDM network is conditioned on the noise level (t = sigma on the EDM process)."""
    return sigma


def random_network(config: UNetConfig = CONFIG, seed: int = SEED) -> EDMPrecond:
    """The EDM-preconditioned U-Net with every weight drawn from `seed` (no zero layers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = EDMPrecond(config)
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()  # PyTorch's default draw, for the zeroed ones too
    return network


def untrained_unet_32(device: Any = "cpu", seed: int = SEED,
                      config: UNetConfig = CONFIG) -> UntrainedScoreModel:
    """The benchmark-only model `untrained-unet-32` on `device`, frozen, in eval mode
    (with another `config`, the same kind of model with another network)."""
    network = random_network(config, seed).to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    model = UntrainedScoreModel(network, EDMSDE(), CIFAR_SPEC, parametrization="x0",
                                condition=_sigma_condition)
    return model.eval()
