"""The NLL's two sources of uncertainty, apart: which test points were drawn (data) and
the Hutchinson probes (Monte-Carlo), against the oracle's closed-form log-density."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.sde import EDMSDE
from harness.metrics.likelihood import ode_nll
from harness.models.oracle import mixture_64d


@pytest.fixture(scope="module")
def setting():
    model = mixture_64d(EDMSDE())
    x = model.sample_clean(48, generator=torch.Generator().manual_seed(5))
    closed_form = -model.log_prob(x, model.sde.t_min).double()
    return model, x, closed_form


def test_with_the_exact_trace_all_uncertainty_is_the_datas(setting):
    model, x, closed_form = setting
    result = ode_nll(model, x, method="exact")
    expected = float(closed_form.std() / math.sqrt(len(x)))   # spread of -log p over points
    assert result.probe_stderr == 0
    assert result.data_stderr == pytest.approx(result.stderr, rel=1e-12)
    assert result.data_stderr == pytest.approx(expected, rel=1e-3)


def test_probe_and_data_errors_add_up_in_variance(setting):
    model, x, closed_form = setting
    result = ode_nll(model, x, num_probes=6, probe="rademacher")
    assert result.probe_stderr > 0
    assert result.data_stderr**2 + result.probe_stderr**2 == pytest.approx(
        result.stderr**2, rel=1e-9)
    # The data part is what the points alone give, up to the probes' own noise in it.
    expected = float(closed_form.std() / math.sqrt(len(x)))
    assert result.data_stderr == pytest.approx(expected, rel=0.25)


def test_one_probe_cannot_tell_them_apart(setting):
    model, x, _ = setting
    result = ode_nll(model, x[:8], num_probes=1)
    assert result.probe_stderr is None and result.data_stderr is None
