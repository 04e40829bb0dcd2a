"""predictor_corrector: Song et al. 2021 PC sampling; NFE and per-sample step sizes."""

from __future__ import annotations

import pytest
import torch

from harness import generate, make_grid
from harness.models.oracle import mixture_64d, ring_2d
from harness.core.sde import make_sde


@pytest.mark.parametrize("corrector, n, per_step", [
    ("langevin", 1, 2), ("langevin", 3, 4), ("langevin", 0, 1), ("none", 2, 1)])
def test_nfe_is_counted_with_and_without_a_corrector(plugins, corrector, n, per_step):
    model = ring_2d(make_sde("ve"))
    pc = plugins.samplers.get("predictor_corrector")
    params = pc.make_params({"corrector": corrector, "n_corrector_steps": n})
    generate(model, pc, make_grid(model.sde, "karras", 6), 0, range(4), params=params)
    assert model.nfe.calls == 6 * per_step == pc.expected_nfe(6, params)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama"])
def test_corrector_step_size_is_per_sample(plugins, predictor):
    # A sample's trajectory must not change when its batch-mates change.
    model = mixture_64d(make_sde("vp"))
    pc = plugins.samplers.get("predictor_corrector")
    params = pc.make_params({"predictor": predictor})
    grid = make_grid(model.sde, "karras", 8)
    together = generate(model, pc, grid, 0, range(32), params=params)
    alone = generate(model, pc, grid, 0, [5], params=params)
    torch.testing.assert_close(alone[0], together[5], rtol=1e-12, atol=1e-12)


def test_reverse_diffusion_predictor_on_ve_is_the_reference_update(plugins):
    # For VE: x_mean = x + (sigma_i^2 - sigma_{i+1}^2) score (Song et al. 2021, Alg. 2).
    model = ring_2d(make_sde("ve"))
    pc = plugins.samplers.get("predictor_corrector")
    grid = make_grid(model.sde, "karras", 1)
    x = torch.randn(3, 2, dtype=torch.float64)
    out = pc(model, x, grid, noise=None, params=pc.make_params({"corrector": "none"}))
    expected = x + (grid.sigma[0] ** 2 - grid.sigma[1] ** 2) * model.score(x, grid.t[0])
    torch.testing.assert_close(out, expected)
