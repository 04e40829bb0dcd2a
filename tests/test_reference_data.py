"""Models provide their reference data and FID features through the model interface.

The oracle's reference data are exact samples of its own mixture, the digits model's
are the fixed digits splits; a model may provide its own; bad requests are refused with
a message naming what is allowed. Expectations are written from the data, not from the
code under test.
"""

from __future__ import annotations

import pytest
import torch

from harness import DataSpec, NetworkScoreModel, ParameterError, ReferenceData, VPSDE
from harness.models import digits
from harness.models.oracle import ring_2d
from harness.models.pretrained import load_digits_model, load_feature_extractor


@pytest.fixture(scope="module")
def digits_model():
    return load_digits_model()


def test_oracle_gives_exact_samples_of_its_mixture_per_split():
    model = ring_2d(VPSDE(), radius=2.0, std=0.1)
    test = model.reference_data("test", 4000, seed=0)
    assert test.exact and model.reference_is_exact
    assert test.data.shape == (4000, 2) and test.data.dtype == torch.float64
    # Every exact sample lies near the circle of radius 2 (std 0.1: 6 sigma is 0.6).
    radius = test.data.norm(dim=1)
    assert float((radius - 2).abs().max()) < 0.6
    assert float(radius.mean()) == pytest.approx(2.0, abs=0.01)
    train = model.reference_data("train", 4000, seed=0)
    assert train.data_id != test.data_id and not torch.equal(train.data, test.data)
    again = model.reference_data("test", 4000, seed=0)
    assert again.data_id == test.data_id and torch.equal(again.data, test.data)
    other_seed = model.reference_data("test", 4000, seed=1)
    assert other_seed.data_id != test.data_id and not torch.equal(other_seed.data, test.data)
    assert model.reference_data().data.shape[0] == 10_000
    assert model.feature_extractor() is None


def test_oracle_data_id_changes_with_the_mixture():
    ids = {ring_2d(VPSDE(), std=std).reference_data("test", 10).data_id for std in (0.1, 0.2)}
    assert len(ids) == 2


def test_digits_reference_data_are_the_fixed_splits(digits_model):
    assert not digits_model.reference_is_exact
    images, _ = digits.load_split("test")
    ref = digits_model.reference_data("test")
    assert torch.equal(ref.data, images) and ref.data.shape == (355, 1, 8, 8)
    assert ref.data_id == "digits:test:n=355:57cb840d6e828076"  # the cache key of the stats
    first = digits_model.reference_data("train", 100, seed=5)
    assert torch.equal(first.data, digits.load_split("train")[0][:100])
    assert first.data_id.startswith("digits:train:n=100:")


def test_digits_features_are_the_shipped_classifier(digits_model):
    extractor = digits_model.feature_extractor("cpu")
    assert extractor.name == "digits"
    assert extractor.sha256 == load_feature_extractor().sha256
    assert extractor(torch.zeros(3, 1, 8, 8)).shape == (3, extractor.num_features)


def test_bad_requests_are_refused_before_any_work(digits_model):
    with pytest.raises(ParameterError, match="train, test, all.*'validation'"):
        digits_model.reference_data("validation")
    for num in (0, -3, 2.5, True):
        with pytest.raises(ParameterError, match="positive integer"):
            digits_model.reference_data("test", num)


class Net(torch.nn.Module):
    def forward(self, x, t):
        return x


def test_a_model_without_reference_data_says_how_to_add_them():
    model = NetworkScoreModel(Net(), VPSDE(), DataSpec(shape=(3,)))
    assert model.reference_splits == () and model.feature_extractor() is None
    with pytest.raises(ParameterError, match="reference_splits.*_reference_data"):
        model.reference_data()


class OwnData(NetworkScoreModel):
    """A third-party model with its own reference data."""

    reference_splits = ("test",)
    shape = (3,)

    def _reference_data(self, split, num, seed):
        data = torch.arange(3 * (num or 4), dtype=torch.float32).reshape(-1, *self.shape)
        return ReferenceData(f"own:{split}:{num}", data, "counting numbers")


def test_a_model_can_provide_its_own_and_is_held_to_its_data_shape():
    model = OwnData(Net(), VPSDE(), DataSpec(shape=(3,)))
    ref = model.reference_data("test", 2)
    assert ref.data_id == "own:test:2" and ref.data.shape == (2, 3)

    class WrongShape(OwnData):
        shape = (1, 3)

    with pytest.raises(ParameterError, match=r"shape \(N, 3\), got ReferenceData"):
        WrongShape(Net(), VPSDE(), DataSpec(shape=(3,))).reference_data("test")

    class ClaimsExact(OwnData):
        reference_is_exact = True

    with pytest.raises(ParameterError, match="reference_is_exact"):
        ClaimsExact(Net(), VPSDE(), DataSpec(shape=(3,))).reference_data("test")
