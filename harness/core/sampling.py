"""Drawing samples: initial noise from per-sample streams, then the sampler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from .model import ScoreModel
from .noise import SampleNoise
from .sampler import Callback, Params, Sampler
from .schedules import TimeGrid


@torch.no_grad()
def generate(model: ScoreModel, sampler: Sampler, grid: TimeGrid, seed: int,
             indices: Sequence[int], params: Optional[Params] = None,
             callback: Callback = None, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Samples `indices` of the run with base `seed`: sample i depends only on (seed, i).

    The initial state is x_T = prior_std * (first draw of each sample's stream); the
    sampler's own draws continue the same streams. Returns (len(indices), *data.shape).
    """
    params = sampler.make_params() if params is None else params
    dtype = dtype or model.dtype
    noise = SampleNoise(seed, indices, model.data.shape, device=model.device, dtype=dtype)
    x = model.sde.prior_std * noise()
    return sampler(model, x, grid, noise, callback, params)
