"""What `ode_nll` reports beside the mean: standard errors, NFE, units and logged names.

Each number is recomputed here from the per-point values (NumPy, ddof 1) or from the
model's own NFE counter on separate runs, so that the aggregation inside the harness is
checked against an independent statement of it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.core.counting import CountedModel
from harness.core.model import DataSpec
from harness.errors import ParameterError
from harness.core.noise import SampleNoise
from harness.core.sde import VPSDE
from harness.metrics import likelihood
from harness.metrics.likelihood import dequantise, ode_nll
from harness.models.oracle import GaussianMixture, ring_2d

# Loose tolerances keep the solves short; the checks below are about aggregation.
FAST = {"rtol": 1e-3, "atol": 1e-3}


def _points(model, n, seed=1):
    return model.sample_clean(n, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return ring_2d(VPSDE())


def test_stderr_is_the_spread_of_per_point_means_over_sqrt_n(model):
    result = ode_nll(model, _points(model, 12), num_probes=3, probe="gaussian", seed=2,
                     **FAST)
    values = result.values.numpy()
    assert values.shape == (12, 3) and result.num_points == 12 and result.num_probes == 3
    assert result.nats == pytest.approx(values.mean(), rel=1e-12)
    stderr = values.mean(1).std(ddof=1) / math.sqrt(12)
    assert result.stderr == pytest.approx(stderr, rel=1e-12)
    # The probe noise alone: sqrt(sum_i var_k(v_ik) / K) / N.
    probe = math.sqrt((values.var(1, ddof=1) / 3).sum()) / 12
    assert result.probe_stderr == pytest.approx(probe, rel=1e-12)
    assert result.nats_per_dim == pytest.approx(result.nats / 2, rel=1e-12)
    assert result.nats_per_dim_stderr == pytest.approx(stderr / 2, rel=1e-12)
    assert result.bits_per_dim_stderr == pytest.approx(stderr / (2 * math.log(2)), rel=1e-12)


def test_probe_stderr_is_zero_for_the_exact_trace_and_unknown_for_one_probe(model):
    x = _points(model, 4)
    exact = ode_nll(model, x, method="exact", **FAST)
    assert exact.probe_stderr == 0.0 and exact.num_probes == 1 and exact.probe is None
    single = ode_nll(model, x, **FAST)                  # the defaults: one probe, seed 0
    assert single.probe_stderr is None and single.probe == "rademacher"
    assert (single.num_probes, single.seed) == (1, 0)
    alone = ode_nll(model, x[:1], method="exact", **FAST)
    assert math.isnan(alone.stderr)                           # one point: no spread


def test_nfe_mean_and_max_are_those_of_the_batches_run_separately(model):
    x = _points(model, 5, seed=3)
    batched = ode_nll(model, x, batch_size=2, seed=4, **FAST)
    per_batch = []
    for part in ([0, 1], [2, 3], [4]):
        counted = CountedModel(model)
        alone = ode_nll(counted, x[part], seed=4, indices=part, **FAST)
        per_batch.append((counted.nfe.rows, len(part)))
        assert alone.nfe_mean == counted.nfe.rows / len(part) == alone.nfe_max
        torch.testing.assert_close(alone.values, batched.values[part], rtol=0, atol=0)
    assert batched.nfe_mean == pytest.approx(sum(r for r, _ in per_batch) / 5)
    assert batched.nfe_max == pytest.approx(max(r / n for r, n in per_batch))


def test_the_logged_names_and_conventions(model):
    result = ode_nll(model, _points(model, 3), num_probes=2, seed=7, **FAST)
    params = result.params()
    assert set(params) == {
        "nll_units", "nll_bits_per_dim_formula", "nll_method", "nll_probe",
        "nll_num_probes", "nll_num_points", "nll_dim", "nll_eps", "nll_eps_correction",
        "nll_solver", "nll_rtol", "nll_atol", "nll_dequantisation", "nll_bin_width",
        "nll_offset_bits_per_dim", "nll_stderr", "nll_seed", "nll_nfe"}
    assert (params["nll_method"], params["nll_probe"], params["nll_num_probes"],
            params["nll_num_points"], params["nll_dim"], params["nll_seed"]) == (
        "hutchinson", "rademacher", 2, 3, 2, 7)
    assert (params["nll_rtol"], params["nll_atol"]) == (1e-3, 1e-3)
    assert params["nll_bits_per_dim_formula"] == "nats / (D log 2)"
    assert params["nll_offset_bits_per_dim"] == 0.0 and params["nll_bin_width"] is None
    quantised = ring_2d(VPSDE())
    quantised.data = DataSpec(shape=(2,), value_range=(-1.5, 1.5), levels=61)
    formula = ode_nll(quantised, _points(quantised, 2), **FAST).params()
    assert formula["nll_bits_per_dim_formula"] == "(nats / D - log(bin_width)) / log 2"


def test_dequantise_draws_each_point_s_noise_from_its_own_index():
    spec = DataSpec(shape=(3,), value_range=(-1.0, 1.0), levels=9)
    x = torch.zeros(8, 3, dtype=torch.float64)
    whole = dequantise(x, spec)
    torch.testing.assert_close(whole, dequantise(x, spec, seed=0), rtol=0, atol=0)
    part = dequantise(x[[5, 2]], spec, indices=[5, 2])
    torch.testing.assert_close(part, whole[[5, 2]], rtol=0, atol=0)
    assert not torch.equal(dequantise(x, spec, seed=1), whole)
    assert whole.dtype == torch.float64
    assert np.all(np.abs(whole.numpy()) <= spec.bin_width / 2)


def test_rademacher_probes_are_exact_for_an_isotropic_gaussian():
    # For data N(mu, s^2 I) the PF-ODE drift is linear with Jacobian c(t) I, so
    # e^T (c I) e = c D for every +-1 probe: all Rademacher estimates of a point agree
    # (and with the exact trace, to the solver's tolerance), while Gaussian probes
    # (|e|^2 != D) scatter.
    model = GaussianMixture([1.0], [[0.3, -0.2, 0.5]], [0.4], VPSDE())
    x = _points(model, 6, seed=5)
    rademacher = ode_nll(model, x, num_probes=3, **FAST)
    values = rademacher.values
    torch.testing.assert_close(values, values[:, :1].expand(6, 3), rtol=0, atol=1e-12)
    assert rademacher.probe_stderr < 1e-12
    exact = ode_nll(model, x, method="exact", **FAST).values[:, 0]
    torch.testing.assert_close(values[:, 0], exact, rtol=0, atol=1e-2)
    gaussian = ode_nll(model, x, num_probes=3, probe="gaussian", **FAST)
    assert gaussian.probe_stderr > 1e-3


def test_dequantisation_maps_the_stream_s_first_draw_through_the_normal_cdf():
    spec = DataSpec(shape=(4,), value_range=(-1.0, 1.0), levels=5)
    x = torch.zeros(3, 4, dtype=torch.float64)
    first = SampleNoise(9, [4, 0, 7], (4,), dtype=torch.float64)()
    uniform = torch.special.ndtr(first) - 0.5                    # N(0, 1) -> U(-1/2, 1/2)
    out = dequantise(x, spec, seed=9, indices=[4, 0, 7])
    torch.testing.assert_close(out, spec.bin_width * uniform, rtol=0, atol=0)



def test_ode_nll_evaluates_exactly_the_points_dequantise_returns():
    # Dequantising inside ode_nll and solving continuous data dequantised beforehand
    # must be the same computation, bit for bit.
    spec = DataSpec(shape=(2,), value_range=(-1.5, 1.5), levels=61)
    quantised, continuous = ring_2d(VPSDE()), ring_2d(VPSDE())
    quantised.data = spec
    x = (_points(quantised, 6, seed=8) / spec.bin_width).round() * spec.bin_width
    inside = ode_nll(quantised, x, method="exact", seed=3, **FAST).values
    before = ode_nll(continuous, dequantise(x, spec, seed=3), method="exact", **FAST).values
    torch.testing.assert_close(inside, before, rtol=0, atol=0)


def test_rademacher_probes_are_fair_signs():
    # E[e e^T] = I needs P(+1) = P(-1) = 1/2 in every coordinate.
    model = ring_2d(VPSDE())
    x = torch.zeros(4000, 2, dtype=torch.float64)
    _, probes = likelihood._draws(model, x, range(4000), 0, "hutchinson", "rademacher", 2)
    assert probes.shape == (2, 4000, 2) and probes.dtype == torch.float64
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(probes.mean())) < 4 / math.sqrt(probes.numel())


def test_two_points_have_a_standard_error(model):
    result = ode_nll(model, _points(model, 2, seed=9), method="exact", **FAST)
    v = result.values[:, 0]
    assert result.stderr == pytest.approx(abs(float(v[0] - v[1])) / 2, rel=1e-12)


@pytest.mark.parametrize("options, match", [
    ({"method": "trace"}, "method must be one of hutchinson, exact"),
    ({"probe": "uniform"}, "probe must be one of rademacher, gaussian"),
    ({"num_probes": 0}, "num_probes"), ({"num_probes": True}, "num_probes"),
    ({"num_probes": 1.5}, "num_probes"),
    ({"eps": 0.0}, "eps must lie in"), ({"eps": 1.0}, "eps must lie in"),
    ({"batch_size": 0}, "batch_size"), ({"indices": [0]}, "1 indices for 2 test points"),
])
def test_bad_options_are_refused_before_any_solve(model, options, match):
    counted = CountedModel(model)
    with pytest.raises(ParameterError, match=match):
        ode_nll(counted, _points(model, 2), **options)
    assert counted.nfe.calls == 0


def test_test_points_of_another_shape_are_refused(model):
    with pytest.raises(ParameterError, match=r"shape \(3,\), the model's data have shape \(2,\)"):
        ode_nll(model, torch.zeros(2, 3, dtype=torch.float64))


def test_test_points_are_cast_to_the_model_s_dtype(model):
    x = _points(model, 3, seed=10)
    as_float32 = ode_nll(model, x.float(), method="exact", **FAST)
    torch.testing.assert_close(as_float32.values, ode_nll(model, x.float().double(),
                                                          method="exact", **FAST).values,
                               rtol=0, atol=0)
