"""eps-, x0-, v- and score-parametrised networks give the same denoiser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.core.counting import CountedModel
from harness.core.model import NetworkScoreModel, PARAMETRIZATIONS, to_prediction
from harness.models.oracle import ring_2d
from harness.core.sde import _expand, make_sde
from harness.errors import ParameterError


class OracleAsNetwork(nn.Module):
    """A 'network' of a given parametrisation built from the oracle's exact denoiser."""

    def __init__(self, oracle, parametrization):
        super().__init__()
        self.oracle, self.parametrization = oracle, parametrization

    def forward(self, x_t, t):
        sde = self.oracle.sde
        s, sigma = _expand(sde.scale(t), x_t), sde.sigma(t)
        x = x_t / s
        denoised = self.oracle._denoise(x, sigma)
        return to_prediction(self.parametrization, denoised, x, s, _expand(sigma, x))


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_adapters_round_trip_to_the_exact_denoiser_and_score(sde, parametrization):
    oracle = ring_2d(sde)
    net = OracleAsNetwork(oracle, parametrization)
    model = CountedModel(NetworkScoreModel(net, sde, oracle.data, parametrization))
    x = oracle.sample(64, 0.3 * sde.T, torch.Generator().manual_seed(0))
    t = 0.3 * sde.T
    sigma = sde.sigma(t)
    torch.testing.assert_close(model.denoise(x / sde.scale(t), sigma),
                               oracle.denoise(x / sde.scale(t), sigma), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.score(x, t), oracle.score(x, t), rtol=1e-7, atol=1e-7)
    assert model.nfe.calls == 2


def test_unknown_parametrization_is_refused():
    with pytest.raises(ParameterError, match="parametrization must be one of eps, x0, v"):
        NetworkScoreModel(nn.Identity(), make_sde("vp"), ring_2d(make_sde("vp")).data, "x1")
