"""The conformance kit with guidance on: every built-in sampler passes on a guided model,
and a sampler that does not evaluate the whole batch in its row order fails."""


from harness import Capabilities, Sampler
from harness.testing import check_sampler, conformance_test
from tests.conftest import all_sampler_names

# The adapted samplers (`library:name`) are left out: their unguided verdicts, library
# defects included, are pinned in tests/test_*_kit.py.
test_every_builtin_sampler_conforms_on_a_guided_model = conformance_test(
    *all_sampler_names(), guidance=3.0,
    checks=["registration", "output", "seed", "batch", "nfe", "capabilities", "model",
            "final_step"])

def _reordering_euler(model, x, grid, noise, callback, params):
    """Euler that evaluates its batch in reversed row order: fine for an unconditional
    model, wrong under guidance, where row i is bound to sample i's label."""
    for i in range(grid.steps):
        sigma, sigma_next = grid.sigma[i], grid.sigma[i + 1]
        denoised = model.denoise(x.flip(0), sigma).flip(0)
        x = x + (sigma_next - sigma) * (x - denoised) / sigma
        if callback is not None:
            callback({"i": i, "t": grid.t[i], "x": x})
    return x

def test_a_sampler_that_reorders_rows_passes_unguided_and_fails_guided():
    sampler = Sampler("reordering_euler", _reordering_euler,
                      Capabilities(stochastic=False, order=1))
    checks = ["output", "batch"]
    assert check_sampler(sampler, checks=checks, raise_on_failure=False).passed
    report = check_sampler(sampler, checks=checks, guidance=3.0, raise_on_failure=False)
    assert not report.passed
    assert report.result("batch").status == "failed"

def test_guided_nfe_counts_guided_evaluations_not_network_rows():
    report = check_sampler("heun", checks=["nfe"], guidance=2.0)
    assert "5 guided" in report.result("nfe").message
