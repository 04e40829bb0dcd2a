"""The energy metric against an independent reference and the harness's metric kit.

Needs this distribution installed next to the harness (`pip install .[test]`), since
the kit looks the metric up by name among the installed plugins.
"""

import pytest
import scipy.stats
import torch

from harness import (DataSpec, NetworkScoreModel, ReferenceData, SuiteContext, TrialContext,
                     VPSDE)
from harness.testing import check_metric, metric_conformance_test

from harness_energy import EnergyDistance

# One pytest case: declaration, values, NFE, repeatability and scope.
test_conformance = metric_conformance_test("energy", options={"num_reference": 500})


class FixedData(NetworkScoreModel):
    """A model whose reference data are the given 1-D points."""

    reference_splits = ("test",)

    def __init__(self, points):
        super().__init__(torch.nn.Identity(), VPSDE(), DataSpec(shape=(1,)))
        self.points = points

    def _reference_data(self, split, num, seed):
        return ReferenceData("fixed", self.points[:num])


def test_matches_scipy_in_one_dimension():
    """scipy's energy_distance is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) for 1-D samples."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=gen, dtype=torch.float64)
    y = 0.5 + torch.randn(200, 1, generator=gen, dtype=torch.float64)
    metric = EnergyDistance()
    suite = SuiteContext(model=FixedData(y), model_name="fixed", device="cpu")
    metric.prepare(suite)
    trial = TrialContext(suite=suite, sampler=None, params=None, grid=None, seed=0, samples=x)
    expected = scipy.stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    assert metric.compute(trial)["energy"] == pytest.approx(expected, rel=1e-12)


def test_reports_the_reference_data():
    report = check_metric("energy", options={"num_reference": 500}, checks=["values"])
    assert report.passed
