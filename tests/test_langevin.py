"""langevin: Karras et al. 2022, Alg. 2 (stochastic churn + Heun)."""

from __future__ import annotations

import torch

from harness import generate, make_grid
from harness.models.oracle import mixture_64d, ring_2d
from harness.core.sde import make_sde


def test_no_churn_is_heun_bit_for_bit(plugins):
    for sde in ("vp", "edm"):
        model = mixture_64d(make_sde(sde))
        grid = make_grid(model.sde, "karras", 10)
        langevin = plugins.samplers.get("langevin")
        still = generate(model, langevin, grid, 3, range(32),
                         params=langevin.make_params({"S_churn": 0.0}))
        heun = generate(model, plugins.samplers.get("heun"), grid, 3, range(32))
        assert torch.equal(still, heun)


def test_churn_only_inside_the_sigma_window(plugins):
    model = ring_2d(make_sde("edm"))
    grid = make_grid(model.sde, "karras", 10)
    langevin = plugins.samplers.get("langevin")
    window = langevin.make_params({"S_churn": 5.0, "S_tmin": 1e6, "S_tmax": 1e7})
    out = generate(model, langevin, grid, 0, range(16), params=window)
    heun = generate(model, plugins.samplers.get("heun"), grid, 0, range(16))
    assert torch.equal(out, heun)
    churned = generate(model, langevin, grid, 0, range(16),
                       params=langevin.make_params({"S_churn": 5.0}))
    assert not torch.equal(churned, heun)


def test_nfe_is_two_per_step_less_one(plugins):
    model = ring_2d(make_sde("vp"))
    langevin = plugins.samplers.get("langevin")
    generate(model, langevin, make_grid(model.sde, "karras", 7), 0, range(4))
    assert model.nfe.calls == 13
