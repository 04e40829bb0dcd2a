"""unipc: against diffusers' UniPCMultistepScheduler, and its order on the exact Gaussian flow.

The reference runs on exactly the harness's noise levels (see
`diffusers_multistep_support`), in float64, with the 64-D mixture's exact denoiser; every
intermediate state is compared, under every process.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import TimeGrid, make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d

from . import gaussian_closed_form as cf
from .diffusers_multistep_support import relative_difference, run_harness, run_scheduler
from .gaussian_flow_support import exact_flow, fitted_order

# diffusers calls numpy in ways numpy 2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

#: Agreement with diffusers (float64, same noise levels): relative to the state's size.
REFERENCE_RTOL = 1e-10
PROCESSES = ("vp", "subvp", "ve", "edm")


def _start(model, batch=6):
    gen = torch.Generator().manual_seed(3)
    return model.sde.prior_std * torch.randn(batch, 64, dtype=torch.float64, generator=gen)


def _without_last_point(grid):
    return TimeGrid(grid.t[:-1], grid.sigma[:-1], grid.scale[:-1], grid.schedule)


def _compare(plugins, process, grid, params, **scheduler_options):
    diffusers = pytest.importorskip("diffusers")
    model = mixture_64d(make_sde(process))
    x = _start(model)
    scheduler = diffusers.UniPCMultistepScheduler(
        solver_order=params.order, solver_type=params.variant, predict_x0=True,
        prediction_type="sample", lower_order_final=params.lower_order_final,
        **scheduler_options)
    reference, denoised = run_scheduler(scheduler, model, x, grid)
    ours = run_harness(plugins.samplers.get("unipc"), model, x, grid, params)
    if grid.sigma[-1] == 0 and params.variant == "bh1":
        # The step to sigma = 0 has the limit u_N = D_{N-1}; diffusers evaluates it as
        # B(h) * 0 with B(h) = -h = -inf, which is NaN: compare with the limit.
        reference[-1] = denoised[-1]
    return max(relative_difference(a, b) for a, b in zip(ours, reference))


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_state_equals_diffusers_unipc(plugins, process, variant, order):
    params = plugins.samplers.get("unipc").make_params({"order": order, "variant": variant})
    for steps in (1, 2, 3, 7):
        grid = make_grid(make_sde(process), "karras", steps)
        assert _compare(plugins, process, grid, params) <= REFERENCE_RTOL


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_without_lower_order_final_steps_on_a_grid_ending_above_zero(plugins, variant):
    # Higher-order steps cannot land on sigma = 0 (lambda = inf), in either library.
    params = plugins.samplers.get("unipc").make_params(
        {"order": 3, "variant": variant, "lower_order_final": False})
    grid = _without_last_point(make_grid(make_sde("vp"), "karras", 9))
    assert _compare(plugins, "vp", grid, params) <= REFERENCE_RTOL


def test_unip_alone_equals_diffusers_with_every_corrector_disabled(plugins):
    params = plugins.samplers.get("unipc").make_params({"order": 3, "corrector": False})
    grid = make_grid(make_sde("edm"), "karras", 8)
    assert _compare(plugins, "edm", grid, params, disable_corrector=list(range(8))) \
        <= REFERENCE_RTOL


def test_the_step_to_sigma_zero_returns_the_denoised_estimate(plugins):
    model = cf.gaussian_data(make_sde("vp"))
    grid = make_grid(model.sde, "karras", 5)
    x = cf.start()
    seen = []
    plugins.samplers.get("unipc")(model, x, grid, noise=None, callback=seen.append)
    u = seen[-2]["x"] / grid.scale[-2]
    torch.testing.assert_close(seen[-1]["x"], cf.edm_denoiser(u, grid.sigma[-2]),
                               rtol=1e-13, atol=1e-13)


# Order on the exact Gaussian flow (EDM, steps uniform in log sigma from 80 to 0.2,
# the variable of UniPC's exponential integrator): UniP-p is of order p, the UniC
# corrector adds one, and the default lower-order final steps end on a first-order step.
ORDER_STEPS = (64, 128, 256, 512)
EXPECTED_ORDER = [
    ({"order": 1, "lower_order_final": False}, 2.0),
    ({"order": 3, "lower_order_final": False}, 4.0),
    ({"order": 3, "lower_order_final": False, "corrector": False}, 3.0),
    ({"order": 2, "lower_order_final": False, "corrector": False}, 2.0),
    ({}, 2.0),
]


@pytest.mark.parametrize("options, expected", EXPECTED_ORDER,
                         ids=[str(o or "defaults") for o, _ in EXPECTED_ORDER])
def test_order_on_the_exact_gaussian_flow(plugins, options, expected):
    sampler = plugins.samplers.get("unipc")
    params = sampler.make_params(options)
    model = cf.gaussian_data(make_sde("edm"))
    x = cf.start(batch=16)
    exact = exact_flow("edm", x, 80.0, 0.2)
    errors = []
    for steps in ORDER_STEPS:
        grid = TimeGrid.from_times(model.sde, np.geomspace(80.0, 0.2, steps + 1))
        errors.append(float((sampler(model, x, grid, None, params=params) - exact)
                            .abs().max()))
    assert abs(fitted_order(ORDER_STEPS, errors) - expected) <= 0.4, errors
    if not options:
        assert expected == sampler.capabilities.order
