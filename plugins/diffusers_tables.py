"""The noise levels a diffusers scheduler is built with: the model's process, exactly.

A diffusers scheduler describes its process by a training table: the discrete
alpha_bar_n = prod_{k <= n} (1 - beta_k), n = 0 .. N-1, from which it derives every noise
level it visits (sigma_n = sqrt((1 - alpha_bar_n) / alpha_bar_n) in the harness's unscaled
variable, since alpha_bar = 1 / (1 + sigma^2)). The EDM-preconditioned schedulers instead
take the range [sigma_min, sigma_max] of their Karras grid. Both are set from the model:

* a diffusers DDPM model (`DiscreteVPSDE`) has a table: the scheduler gets it, bit for bit
  (`trained_betas` below), so that every timestep it visits is one the network was
  trained at;
* a continuous process (VP, sub-VP, VE, EDM) has none: it gets `TABLE_LEVELS` levels
  log-uniform in sigma over the model's range [sigma(t_min), sigma(T)], its low end
  raised to `SIGMA_FLOOR` where float32 cannot hold it (below). Uniform in
  log sigma is uniform in log-SNR, the variable the fast solvers step in, and is the
  same rule for every process (uniform steps of a VP's own time would crowd an EDM
  table at large sigma); a scheduler's timestep spacing then means the same spacing in
  log sigma under every process. The table is part of a trial's logged params
  (`training_table`).

diffusers keeps the table in float32, whose alpha_bar near 1 moves in steps of 6e-8:
a continuous process's levels are rounded there (sigma near EDM's 0.002, where
1 - alpha_bar = 4e-6, by ~0.4 %), and the model is evaluated at the rounded level the
scheduler steps with, never at the unrounded one. Below sigma ~ 2.4e-4 alpha_bar rounds
to 1 (sigma = 0, where no noise prediction exists): sub-VP's sigma(t_min) = 1.1e-4 is one
such level, hence the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.models.diffusers_model import DiscreteVPSDE

#: Levels of the table given for a continuous process, the diffusers default length.
TABLE_LEVELS = 1000
#: The lowest level of a continuous process's table: EDM's sigma_min, where float32
#: still holds alpha_bar to 0.75 % of 1 - alpha_bar.
SIGMA_FLOOR = 0.002
#: float32 values tried on each side of a beta's first guess (see `trained_betas`).
NEIGHBOURS = 4


def noise_range(sde: Any) -> tuple[float, float]:
    """The model's [sigma(t_min), sigma(T)]: what a sampling grid may visit."""
    return float(sde.sigma(sde.t_min)), float(sde.sigma(sde.T))


def alphas_cumprod(sde: Any) -> list[float]:
    """The training table for the process: its own, or `TABLE_LEVELS` levels
    log-uniform in sigma over its range (see the module docstring)."""
    if isinstance(sde, DiscreteVPSDE):
        return sde.alphas_cumprod.tolist()
    lowest, highest = noise_range(sde)
    low, high = math.log(max(lowest, SIGMA_FLOOR)), math.log(highest)
    last = TABLE_LEVELS - 1
    sigmas = [math.exp(low + n / last * (high - low)) for n in range(TABLE_LEVELS)]
    return [1 / (1 + s * s) for s in sigmas]


def trained_betas(table: Sequence[float]) -> list[float]:
    """Betas from which diffusers rebuilds `table`, rounded to float32, bit for bit.

    diffusers holds the betas in float32, forms alpha = 1 - beta in float32 and the
    running product with `torch.cumprod`, which accumulates in float64 and rounds each
    entry to float32. The plain betas 1 - alpha_bar_n / alpha_bar_{n-1} land up to 7e-7
    (relative) off; instead each beta is chosen among the float32 values next to that
    guess so that the rounded running product hits alpha_bar_n. A table that diffusers
    made itself is rebuilt exactly (its own betas are among the candidates).
    """
    one = np.float32(1)
    product = 1.0
    betas = []
    for wanted in np.asarray(table, dtype=np.float64).astype(np.float32):
        first = np.float32(float(wanted) / product)
        best = None
        for alpha in _float32_around(first, NEIGHBOURS):
            beta = one - alpha
            reached = product * float(one - beta)   # the alpha diffusers will form
            miss = abs(float(np.float32(reached)) - float(wanted))
            if best is None or miss < best[0]:
                best = (miss, beta, reached)
            if miss == 0:
                break
        betas.append(float(best[1]))
        product = best[2]
    return betas


def _float32_around(value: np.float32, count: int) -> list[np.float32]:
    """`value` and its `count` float32 neighbours on each side, nearest first."""
    found = [value]
    below = above = value
    for _ in range(count):
        below = np.nextafter(below, np.float32(-np.inf))
        above = np.nextafter(above, np.float32(np.inf))
        found += [below, above]
    return found
