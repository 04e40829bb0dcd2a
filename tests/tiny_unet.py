"""A scaled-down copy of the shipped digits architecture with random, non-trivial weights.

The real `EDMPrecond` U-Net (GroupNorm, attention, embeddings, preconditioning) at a size
that runs in milliseconds: what precision, synchronisation and overhead tests need. Its
zero-initialised output layers are re-drawn so the network contributes to every output
(a freshly built EDMPrecond returns c_skip x, whatever precision it runs in).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.digits import DIGITS_SPEC
from harness.core.model import NetworkScoreModel
from harness.core.sde import EDMSDE
from harness.models.unet import EDMPrecond, UNetConfig

TINY = UNetConfig(channels=(8, 16), blocks=1, attention=True, emb_dim=16, num_frequencies=4,
                  groups=4, dropout=0.0)


def _sigma_condition(t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma


def tiny_digits_model(device: torch.device | str = "cpu", seed: int = 0) -> NetworkScoreModel:
    """EDM-preconditioned tiny U-Net on 1x8x8, x0-parametrised, sigma-conditioned."""
    torch.manual_seed(seed)
    network = EDMPrecond(TINY)
    for module in network.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.abs().sum():
            nn.init.normal_(module.weight, std=0.2)
    network = network.to(device).eval().requires_grad_(False)
    model = NetworkScoreModel(network, EDMSDE(), DIGITS_SPEC, parametrization="x0",
                              condition=_sigma_condition)
    return model.eval()
