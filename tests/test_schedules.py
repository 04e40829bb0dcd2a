"""Time grids: named spacings from T to t_min, then a last step to t = 0."""

from __future__ import annotations

import math

import pytest

from harness import SCHEDULES, make_grid


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_grids_span_t_max_to_t_min_then_zero(sde, schedule):
    grid = make_grid(sde, schedule, 10)
    assert grid.steps == 10
    assert grid.t[0] == pytest.approx(sde.T) and grid.t[-2] == pytest.approx(sde.t_min)
    assert grid.t[-1] == 0.0
    assert all(a > b for a, b in zip(grid.t, grid.t[1:]))
    assert grid.sigma == tuple(float(sde.sigma(t)) for t in grid.t)


def test_karras_grid_is_rho_7_in_sigma(sde):
    grid = make_grid(sde, "karras", 5)
    lo, hi = sde.sigma(sde.t_min), sde.sigma(sde.T)
    for i in range(5):
        r = hi ** (1 / 7) + i / 4 * (lo ** (1 / 7) - hi ** (1 / 7))
        assert grid.sigma[i] == pytest.approx(r**7, rel=1e-9)


def test_log_snr_grid_is_uniform_in_log_sigma(sde):
    grid = make_grid(sde, "log_snr", 6)
    logs = [math.log(s) for s in grid.sigma[:-1]]
    gaps = [a - b for a, b in zip(logs, logs[1:])]
    assert max(gaps) == pytest.approx(min(gaps), rel=1e-9)


def test_one_step_grid(sde):
    grid = make_grid(sde, "uniform_t", 1)
    assert grid.t == (sde.T, 0.0)
