"""heun: Karras et al. 2022, Alg. 1."""

from __future__ import annotations

import torch

from harness import generate, make_grid
from harness.models.oracle import ring_2d
from harness.core.sde import make_sde


def test_heun_calls_the_network_exactly_2n_minus_1_times(plugins):
    model = ring_2d(make_sde("edm"))
    heun = plugins.samplers.get("heun")
    for steps in (1, 2, 5, 18):
        model.nfe.reset()
        generate(model, heun, make_grid(model.sde, "karras", steps), 0, range(8))
        assert model.nfe.calls == 2 * steps - 1
        assert heun.expected_nfe(steps, heun.make_params()) == 2 * steps - 1


def test_heun_on_ve_never_lands_on_sigma_zero_so_every_step_is_second_order(plugins):
    model = ring_2d(make_sde("ve"))
    heun = plugins.samplers.get("heun")
    grid = make_grid(model.sde, "karras", 6)
    assert grid.sigma[-1] > 0
    generate(model, heun, grid, 0, range(4))
    assert model.nfe.calls == 12 == heun.expected_nfe(6, heun.make_params(), False)


def test_heun_matches_a_hand_written_edm_step(plugins):
    # Alg. 1 with sigma(t) = t, s(t) = 1: d = (x - D(x; t)) / t.
    model = ring_2d(make_sde("edm"))
    grid = make_grid(model.sde, "karras", 3)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t0, t1 = grid.t[0], grid.t[1]
    d = (x - model.denoise(x, t0)) / t0
    x1 = x + (t1 - t0) * d
    d2 = (x1 - model.denoise(x1, t1)) / t1
    expected = x + (t1 - t0) * (0.5 * d + 0.5 * d2)
    one_step = type(grid)(grid.t[:2], grid.sigma[:2], grid.scale[:2])
    out = plugins.samplers.get("heun")(model, x, one_step, noise=None)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
