"""PF-ODE endpoint error falls like h for euler and h^2 for heun."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

from harness import TimeGrid
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde

T_END = 0.05
STEP_COUNTS = [16, 32, 64, 128]  # the asymptotic regime of both schemes
EXPECTED_ORDER = {"euler": 1.0, "heun": 2.0}


def _reference(model, x0):
    """The same ODE solved by dopri5 at tolerances far below the schemes' errors."""
    def f(t, x):
        return model.ode_drift(x, t)
    ts = torch.tensor([model.sde.T, T_END], dtype=torch.float64)
    return odeint(f, x0, ts, method="dopri5", rtol=1e-11, atol=1e-11)[-1]


@pytest.mark.parametrize("name", sorted(EXPECTED_ORDER))
def test_fitted_order_matches_the_scheme(plugins, name):
    model = ring_2d(make_sde("vp"))
    sampler = plugins.samplers.get(name)
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = _reference(model, x0)
    errors = []
    for n in STEP_COUNTS:
        times = np.linspace(model.sde.T, T_END, n + 1)
        grid = TimeGrid.from_times(model.sde, times)
        out = sampler(model, x0, grid, noise=None)
        errors.append(float((out - reference).norm(dim=1).max()))
    slope = -np.polyfit(np.log(STEP_COUNTS), np.log(errors), 1)[0]
    assert abs(slope - EXPECTED_ORDER[name]) <= 0.3, (
        f"{name}: fitted order {slope:.2f}, errors {errors}")
    assert all(math.isfinite(e) for e in errors)
