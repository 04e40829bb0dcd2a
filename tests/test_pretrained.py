"""The shipped digits score model and FID classifier: hash-verified, working, accurate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from harness.models import digits
from harness.models.checkpoint import ChecksumError, file_sha256, load_checkpoint, tensors_sha256
from harness.models.classifier import accuracy
from harness.core.counting import CountedModel
from harness.core.model import NetworkScoreModel
from harness.models.pretrained import load_digits_model, load_feature_extractor
from harness.core.sde import EDMSDE

WEIGHTS = Path(__file__).resolve().parent.parent / "harness" / "models" / "weights"


@pytest.fixture(scope="module")
def model():
    return load_digits_model()


@pytest.fixture(scope="module")
def extractor():
    return load_feature_extractor()


def test_shipped_files_are_present_and_verified():
    for name in ("digits_edm", "digits_classifier"):
        checkpoint = load_checkpoint(WEIGHTS / f"{name}.safetensors")
        assert checkpoint.sha256 == file_sha256(WEIGHTS / f"{name}.safetensors")
        assert checkpoint.manifest["sha256"] == checkpoint.sha256
        assert checkpoint.manifest["data"]["fingerprint"] == digits.split_fingerprint()
        # A few MB at most.
        assert (WEIGHTS / f"{name}.safetensors").stat().st_size < 4_000_000


def test_score_model_loads_with_its_sde_and_data(model):
    assert isinstance(model, NetworkScoreModel)
    assert isinstance(model.sde, EDMSDE)
    assert (model.sde.sigma_min, model.sde.sigma_max) == (0.002, 80.0)
    assert model.data == digits.DIGITS_SPEC
    assert model.parametrization == "x0"
    assert model.sha256 == file_sha256(WEIGHTS / "digits_edm.safetensors")
    assert model.manifest["weights"] == "ema"
    assert not model.training


def test_denoiser_output_is_finite_with_the_right_shape(model):
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([0.002, 0.05, 0.5, 2.0, 20.0, 80.0])
    counted = CountedModel(model)
    with torch.no_grad():
        denoised = counted.denoise(x, sigma)
        score = counted.score(x, sigma)
    assert denoised.shape == x.shape and torch.isfinite(denoised).all()
    assert torch.isfinite(score).all()
    assert counted.nfe.rows == 12


def test_denoiser_recovers_clean_test_digits_at_low_noise(model):
    x, _ = digits.load_split("test")
    x = x[:64]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        low = model.denoise(x + 0.01 * noise, 0.01)
        mid = model.denoise(x + 0.3 * noise, 0.3)
    assert (low - x).pow(2).mean().sqrt() < 0.02
    # At sigma = 0.3 the input is off by 0.3 RMS; the denoiser removes a good part of it.
    assert (mid - x).pow(2).mean().sqrt() < 0.2


def test_classifier_accuracy_on_the_test_split(extractor):
    x, y = digits.load_split("test")
    acc = accuracy(extractor.logits, x, y)
    assert acc >= 0.97
    assert acc == pytest.approx(extractor.manifest["metrics"]["test_accuracy"], abs=1e-12)


def test_feature_extractor_is_frozen_and_keyed_by_its_weights(extractor):
    x, _ = digits.load_split("test")
    features = extractor(x[:10])
    assert features.shape == (10, extractor.num_features) == (10, 64)
    assert torch.isfinite(features).all() and not features.requires_grad
    assert torch.equal(extractor(x[:10]), features)  # deterministic: eval mode
    extractor.train()
    assert not extractor.training
    sha = file_sha256(WEIGHTS / "digits_classifier.safetensors")
    assert extractor.sha256 == sha == tensors_sha256(extractor.classifier.state_dict())


def test_tampered_copy_is_refused(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(WEIGHTS / f"digits_edm{suffix}", tmp_path / f"digits_edm{suffix}")
    data = bytearray((tmp_path / "digits_edm.safetensors").read_bytes())
    data[-5] ^= 1
    (tmp_path / "digits_edm.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="digits_edm.safetensors"):
        load_digits_model(path=tmp_path / "digits_edm.safetensors")
