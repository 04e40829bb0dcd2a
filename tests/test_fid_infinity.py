"""FID_inf (Chong & Forsyth 2020) on the 64-D oracle: it estimates the population FID,
where FID at N = M = 512 sits about 1.2 above it, and its interval covers that value.

Sets are drawn as in `tests/test_interval_calibration.py` (`tests/interval_oracle.py`:
the oracle mixture as the reference distribution, its spread-out versions as generated
ones, features = the coordinates); the population FID between their exact moments is
computed by scipy. FID_inf's interval is a suite's: FID's replicates (both sets
resampled) moved to FID_inf, made by `harness.metrics.bootstrap.interval` with the
distance 0 at 0.
"""

from __future__ import annotations

import harness_plugins.metrics as metrics_plugin
import numpy as np
import pytest
import torch

from harness import ParameterError, SuiteContext, TrialContext
from harness.metrics.bootstrap import REFERENCE_KEY, Bootstrap, index_sets, interval
from harness.metrics.feature_replicates import fid_replicates
from harness.metrics.fid_infinity import fid_infinity
from tests.interval_oracle import ShiftedMixture

N = M = 512
DRAWS = 100
#: As in the calibration test, the coverage verdicts do not move between 50 and 200.
REPLICATES = 50
CASES = {"small": 0.5, "large": 10.0}


@pytest.fixture(scope="module")
def draws():
    """Per case: population FID, and per draw FID_N, FID_inf and FID_inf's interval."""
    mixture = ShiftedMixture()
    sets, references = index_sets(N, REPLICATES), index_sets(M, REPLICATES, REFERENCE_KEY)
    generator = torch.Generator().manual_seed(614)
    spreads = {case: mixture.spread_for_fid(fid) for case, fid in CASES.items()}
    out = {case: {"population": mixture.population_fid(a), "fid": [], "fid_inf": [],
                  "interval": []} for case, a in spreads.items()}
    for _ in range(DRAWS):
        reference = mixture.draw(M, [0.0], generator)[0]
        for case, x in zip(spreads, mixture.draw(N, list(spreads.values()), generator)):
            result = fid_infinity(x, reference)
            replicates = fid_replicates(x, reference, sets, references)
            moved = (replicates.values + result.value - replicates.estimate).tolist()
            out[case]["fid"].append(replicates.estimate)
            out[case]["fid_inf"].append(result.value)
            out[case]["interval"].append(interval(result.value, moved,
                                                  replicates.linear.tolist(), minimum=0.0))
    return out


@pytest.mark.parametrize("case", CASES)
def test_fid_inf_removes_the_small_n_bias(draws, case):
    """FID's mean over the draws lies more than 10 of its standard errors (about 1.2)
    above the population FID; FID_inf's lies within 3 of its own of it."""
    population = draws[case]["population"]
    fid, fid_inf = np.array(draws[case]["fid"]), np.array(draws[case]["fid_inf"])
    assert fid.mean() - population > 10 * fid.std(ddof=1) / np.sqrt(DRAWS)
    assert abs(fid_inf.mean() - population) < 3 * fid_inf.std(ddof=1) / np.sqrt(DRAWS)


@pytest.mark.parametrize("case", CASES)
def test_fid_inf_interval_covers_the_population_fid(draws, case):
    population = draws[case]["population"]
    coverage = np.mean([low <= population <= high for low, high in draws[case]["interval"]])
    assert 0.90 <= coverage <= 0.99, f"{case}: coverage {coverage:.2f}"


def test_fid_inf_is_an_opt_in_metric_of_the_plugin(tmp_path):
    """`[metrics.fid_inf]` gives FID_inf, its slope (FID's bias at this N) and replicates
    with their linear parts, on the oracle model's exact reference samples."""
    metric = {m.name: m for m in (cls() for cls in metrics_plugin.METRICS)}["fid_inf"]
    mixture = ShiftedMixture()
    from harness.core.sde import make_sde
    from harness.models.oracle import mixture_64d

    model = mixture_64d(make_sde("vp"))
    suite = SuiteContext(model=model, model_name="gmm-64d", device="cpu",
                         options={"fid_inf": {"num_reference": 400, "draws": 4,
                                              "cache_dir": str(tmp_path)}})
    samples = mixture.draw(300, [0.0], torch.Generator().manual_seed(0))[0]
    boot = Bootstrap(300, replicates=20)
    trial = TrialContext(suite=suite, sampler=None, params=None, grid=None, seed=0,
                         samples=samples, bootstrap=boot)
    values = metric.compute(trial)
    assert values["fid_inf_num_samples"] == 300
    assert values["fid_inf_slope"] > 0                      # FID is biased upward
    assert len(boot.values["fid_inf"]) == len(boot.linear["fid_inf"]) == 20
    assert {"fid_inf_se_samples", "fid_inf_se_reference"} <= set(values)
    assert metric.params()["fid_inf_draws"] == 4


@pytest.mark.parametrize("fractions, draws",
                         [((1.0,), 8), ((0.5, 1.5), 8), ((0.5, 1.0), 0)])
def test_an_extrapolation_without_two_sizes_or_draws_is_refused(fractions, draws):
    x = torch.randn(40, 3, dtype=torch.float64)
    with pytest.raises(ParameterError, match="two or more fractions"):
        fid_infinity(x, x + 1, fractions, draws)
