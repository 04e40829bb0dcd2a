"""`gaussian-images`: a cheap model of 3x64x64 images, for memory tests of long trials.

The data are N(0, SCALE^2 I) on 3 x 64 x 64 (12,288 values), whose denoiser is exact and
one multiplication, D(x; sigma) = x SCALE^2 / (SCALE^2 + sigma^2); its feature extractor
is a fixed random projection onto FEATURES values. A trial of tens of thousands of
images then costs seconds, and what it holds in memory is what the harness keeps, not
what a network spends.

Loaded with `harness.plugin.manager.load_plugins(extra=[("gaussian_images", module)])`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness import DataSpec, ModelSpec, ReferenceData, ScoreModel, hookimpl, make_sde

harness_api_version = 1

SHAPE = (3, 64, 64)
SCALE = 0.5
FEATURES = 64
NUM_REFERENCE = 256


class RandomProjection(nn.Module):
    """Features: the flattened image times a fixed Gaussian matrix (seed 0)."""

    def __init__(self, features: int = FEATURES) -> None:
        super().__init__()
        self.num_features = features
        self.sha256 = f"gaussian-images-random-projection-{features}"
        generator = torch.Generator().manual_seed(0)
        dim = math.prod(SHAPE)
        self.register_buffer("weight", torch.randn(dim, features, generator=generator)
                             / math.sqrt(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).to(self.weight.dtype) @ self.weight


class GaussianImages(ScoreModel):
    """N(0, SCALE^2 I) images under the EDM process (module docstring)."""

    reference_splits = ("test",)

    def __init__(self, features: int = FEATURES, num_reference: int = NUM_REFERENCE
                 ) -> None:
        super().__init__(make_sde("edm"), DataSpec(SHAPE, (-1.0, 1.0)))
        self.extractor = RandomProjection(features)
        self.num_reference = num_reference

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        shrink = SCALE**2 / (SCALE**2 + sigma.to(x.dtype) ** 2)
        return x * shrink.reshape(-1, *([1] * (x.ndim - 1)))

    def _reference_data(self, split: str, num, seed: int) -> ReferenceData:
        count = self.num_reference if num is None else min(num, self.num_reference)
        generator = torch.Generator().manual_seed(seed)
        data = SCALE * torch.randn(count, *SHAPE, generator=generator)
        return ReferenceData(f"gaussian-images:{split}:n={count}:seed={seed}", data)

    def feature_extractor(self, device="cpu") -> nn.Module:
        return self.extractor.to(device)


@hookimpl
def harness_register_models(register):
    register(ModelSpec("gaussian-images", lambda device="cpu": GaussianImages().to(device),
                       description="N(0, 0.25 I) on 3x64x64, exact denoiser (tests)"))
