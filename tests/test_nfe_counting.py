"""The NFE the model counts equals the calls a counting network sees: every sampler, NLL."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.metrics.likelihood import ode_nll
from harness.core.counting import CountedModel
from harness.core.model import DataSpec, NetworkScoreModel
from harness.plugin.manager import get_plugins
from harness.core.sampling import generate
from harness.core.schedules import TimeGrid, make_grid
from harness.core.sde import EDMSDE, VPSDE

from .conftest import all_sampler_names


class CountingNetwork(nn.Module):
    """An eps-prediction network that counts its own forward calls and rows.

    It predicts the noise of N(0, I) data exactly (eps = x_t s sigma / (s^2 (1 + sigma^2))
    with x_t = s x), so every sampler stays finite, and has one parameter so that
    autograd runs through a real module.
    """

    def __init__(self, sde):
        super().__init__()
        self.sde = sde
        self.gain = nn.Parameter(torch.ones((), dtype=torch.float64))
        self.calls = 0
        self.rows = 0

    def forward(self, x_t, t):
        self.calls += 1
        self.rows += x_t.shape[0]
        s = self.sde.scale(t).view(-1, 1)
        sigma = self.sde.sigma(t).view(-1, 1)
        return self.gain * x_t * sigma / (s * (1 + sigma**2))


def _model(sde, dim=3):
    network = CountingNetwork(sde)
    model = NetworkScoreModel(network, sde, DataSpec(shape=(dim,)), parametrization="eps")
    return model.double(), network


def _sampler_names():
    return all_sampler_names()


#: Step counts on grids ending at sigma = 0 (every one from 1 to 50: multistep solvers
#: change order in their first and last steps) and on grids ending above it.
TO_ZERO = tuple(range(1, 51))
TO_T_MIN = (2, 3, 6, 50)


@pytest.mark.parametrize("name", _sampler_names())
@pytest.mark.parametrize("ends_at_zero", [True, False], ids=["to-zero", "to-t-min"])
def test_counted_nfe_equals_network_calls_and_expected(name, ends_at_zero):
    sde = VPSDE()
    sampler = get_plugins().samplers.get(name)
    params = sampler.make_params()
    batch = 3
    for steps in TO_ZERO if ends_at_zero else TO_T_MIN:
        grid = make_grid(sde, "karras", steps)
        if not ends_at_zero:
            grid = TimeGrid.from_times(sde, grid.t[:-1], grid.schedule)
        model, network = _model(sde)
        model = CountedModel(model)
        out = generate(model, sampler, grid, seed=0, indices=range(batch), params=params)
        assert torch.isfinite(out).all(), steps
        assert model.nfe.calls == network.calls, steps
        assert model.nfe.rows == network.rows == batch * network.calls, steps
        expected = sampler.expected_nfe(grid.steps, params, grid.sigma[-1] == 0)
        assert model.nfe.per_sample(batch) == expected, (steps, expected)


def test_registry_is_not_empty_and_covers_the_ode_samplers():
    names = _sampler_names()
    assert {"euler", "heun"} <= set(names)


def test_adaptive_nll_solve_counts_every_network_call():
    sde = EDMSDE()
    model, network = _model(sde, dim=2)
    counted = CountedModel(model)
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = ode_nll(counted, x, num_probes=2, batch_size=5)        # batches of 5, 5, 2
    assert network.calls == counted.nfe.calls and network.rows == counted.nfe.rows
    assert result.nfe_mean == pytest.approx(network.rows / 12)
    assert result.nfe_max >= result.nfe_mean and result.nfe_max == int(result.nfe_max)
    # dopri5 takes more evaluations than steps; at least a few steps' worth here.
    assert result.nfe_mean > 12
