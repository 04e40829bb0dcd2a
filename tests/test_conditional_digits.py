"""The shipped class-conditional digits model (`digits-cond`): verified weights, labels that
condition, NULL_LABEL rows that are the unconditional denoiser, batch independence, label
dropout at its rate, and the unconditional model left exactly as it was."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from harness.core.counting import CountedModel
from harness.core.model import NULL_LABEL
from harness.errors import ParameterError
from harness.models import digits
from harness.models.checkpoint import CheckpointError, ChecksumError, file_sha256, load_checkpoint
from harness.models.classifier import accuracy
from harness.models.pretrained import (
    ConditionalDigitsScoreModel, DigitsScoreModel, load_conditional_digits_model,
    load_digits_model,
)
from harness.models.training import (
    CONDITIONAL_SCORE_CONFIG, ScoreTrainConfig, drop_labels, train_score_model,
)
from harness.models.unet import EDMPrecond, UNetConfig
from harness.plugin.manager import get_plugins

WEIGHTS = Path(__file__).resolve().parent.parent / "harness" / "models" / "weights"
#: The shipped unconditional weights, as before conditioning existed (commit f0c505d).
UNCONDITIONAL_SHA256 = "087d79e8eaab83fccc2b00544a1808ba79c8287234a5d64bff14ef9231dbe563"
TINY = UNetConfig(channels=(8, 16), emb_dim=16, num_frequencies=4, groups=4, dropout=0.0)


@pytest.fixture(scope="module")
def model():
    return load_conditional_digits_model()


def _inputs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- the shipped checkpoint ------------------------------------------------------------

def test_shipped_checkpoint_is_verified_and_describes_its_training():
    path = WEIGHTS / "digits_edm_cond.safetensors"
    checkpoint = load_checkpoint(path)
    assert checkpoint.sha256 == file_sha256(path) == checkpoint.manifest["sha256"]
    manifest = checkpoint.manifest
    assert manifest["architecture"]["config"]["num_classes"] == 10
    assert manifest["training"]["label_dropout"] == 0.1
    assert manifest["data"]["fingerprint"] == digits.split_fingerprint()
    assert "net.label_embed.table.weight" in checkpoint.tensors
    assert checkpoint.tensors["net.label_embed.table.weight"].shape == (11, 128)
    assert path.stat().st_size < 4_000_000


def test_tampered_copy_is_refused(tmp_path):
    for suffix in (".safetensors", ".json"):
        name = f"digits_edm_cond{suffix}"
        shutil.copyfile(WEIGHTS / name, tmp_path / name)
    copy = tmp_path / "digits_edm_cond.safetensors"
    assert load_conditional_digits_model(path=copy).num_classes == 10
    data = bytearray(copy.read_bytes())
    data[-7] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"digits_edm_cond\.safetensors.*expects sha256"):
        load_conditional_digits_model(path=copy)
    with pytest.raises(ChecksumError):  # through the registered model's path option
        get_plugins().models.get("digits-cond").build("cpu", path=str(copy))


def test_an_unconditional_checkpoint_is_not_taken_for_a_conditional_one():
    with pytest.raises(CheckpointError, match="unconditional"):
        load_conditional_digits_model(path=WEIGHTS / "digits_edm.safetensors")


def test_registered_as_digits_cond_with_ten_classes(model):
    spec = get_plugins().models.get("digits-cond")
    assert spec.num_classes == 10 == model.num_classes
    built = spec.build("cpu")
    assert isinstance(built, ConditionalDigitsScoreModel)
    assert built.sha256 == model.sha256 == file_sha256(WEIGHTS / "digits_edm_cond.safetensors")
    assert not built.training and not any(p.requires_grad for p in built.parameters())


# --- labels --------------------------------------------------------------------------

def test_labels_change_the_output_and_null_rows_are_the_unconditional_denoiser(model):
    x = _inputs(1).expand(12, 1, 8, 8) * 1.5
    labels = torch.tensor([*range(10), NULL_LABEL, NULL_LABEL])
    counted = CountedModel(model)
    with torch.no_grad():
        out = counted.denoise_labelled(x, 1.5, labels)
        plain = counted.denoise(x, 1.5)
    assert counted.nfe.calls == 2 and counted.nfe.rows == 24
    # Every pair of classes gives a different denoised image (same input, same sigma).
    gaps = (out[:10, None] - out[None, :10]).flatten(2).abs().amax(2)
    assert gaps[~torch.eye(10, dtype=torch.bool)].min() > 0.05
    # NULL_LABEL rows are the plain denoiser, which is the same for every row here.
    torch.testing.assert_close(out[10:], plain[10:], rtol=0, atol=1e-6)
    torch.testing.assert_close(plain[0], plain[11], rtol=0, atol=0)
    assert (out[:10] - plain[:10]).abs().amax() > 0.05


def test_a_mixed_batch_equals_its_rows_one_by_one(model):
    x = _inputs(7, seed=3) * 2
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 80.0])
    labels = torch.tensor([3, NULL_LABEL, 0, 9, 3, NULL_LABEL, 7])
    with torch.no_grad():
        batch = model.denoise_labelled(x, sigma, labels)
        rows = [model.denoise_labelled(x[i:i + 1], sigma[i:i + 1], labels[i:i + 1])
                for i in range(7)]
        # The same through the score: the denoiser's rows also make its score's rows.
        unconditional = [model.denoise(x[i:i + 1], sigma[i:i + 1]) for i in (1, 5)]
    torch.testing.assert_close(batch, torch.cat(rows), rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[[1, 5]], torch.cat(unconditional), rtol=0, atol=1e-5)


def test_invalid_labels_are_refused(model):
    x = _inputs(2)
    with pytest.raises(ParameterError, match="labels must be in 0..9"):
        model.denoise_labelled(x, 1.0, torch.tensor([0, 10]))
    with pytest.raises(ParameterError, match="got -2"):
        model.denoise_labelled(x, 1.0, torch.tensor([-2, 0]))
    with pytest.raises(ParameterError, match="shape"):
        model.denoise_labelled(x, 1.0, torch.tensor([0]))
    # Beneath the model's check, the network itself never reads label 10 as the null row.
    with pytest.raises(IndexError):
        model.network(x, torch.ones(2), torch.tensor([10, 0]))


def test_labels_pass_through_the_precision_wrapper_and_float64(model):
    from harness.models.precision import configure_model

    x, labels = _inputs(4) * 2, torch.tensor([1, NULL_LABEL, 5, 9])
    with torch.no_grad():
        reference = model.denoise_labelled(x, 0.8, labels)
        wide = load_conditional_digits_model().to(torch.float64)
        out64 = wide.denoise_labelled(x.double(), 0.8, labels)
        bf16 = configure_model(load_conditional_digits_model(), dtype="bf16")
        out16 = bf16.denoise_labelled(x, 0.8, labels)
        plain16 = bf16.denoise(x, 0.8)
    assert out64.dtype == torch.float64 and out16.dtype == torch.float32
    torch.testing.assert_close(out64.float(), reference, rtol=0, atol=1e-4)
    # bf16 rounding (0.01 here), far below what another label changes (0.8 and more).
    assert (out16 - reference).abs().amax() < 0.05
    torch.testing.assert_close(out16[1], plain16[1], rtol=0, atol=1e-6)


def test_conditional_samples_are_classified_as_their_labels(model):
    """Euler on the PF-ODE (Karras grid, 16 steps) from 80 to 0, ten samples per class:
    the shipped classifier reads back the label the samples were drawn for."""
    labels = torch.arange(10).repeat_interleave(10)
    x = torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 80
    rho, steps = 7.0, 16
    ramp = torch.linspace(0, 1, steps)
    sigmas = (80 ** (1 / rho) + ramp * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    sigmas = torch.cat([sigmas, torch.zeros(1)])
    with torch.no_grad():
        for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
            d = (x - model.denoise_labelled(x, float(sigma), labels)) / sigma
            x = x + (nxt - sigma) * d
    classifier = model.classifier("cpu")
    assert accuracy(classifier, x.clamp(-1, 1), labels) >= 0.9


# --- what else the model gives the metrics ---------------------------------------------

def test_reference_data_carry_the_digit_classes(model):
    ref = model.reference_data("test")
    images, labels = digits.load_split("test")
    assert torch.equal(ref.data, images) and torch.equal(ref.labels, labels)
    assert ref.labels.dtype == torch.int64
    train = model.reference_data("train", num=50)
    assert torch.equal(train.labels, digits.load_split("train")[1][:50])
    assert ref.data_id == load_digits_model().reference_data("test").data_id
    assert load_digits_model().reference_data("test").labels is None


def test_classifier_and_features_are_the_shipped_classifier(model):
    classifier = model.classifier("cpu")
    x, y = digits.load_split("test")
    logits = classifier(x[:8])
    assert logits.shape == (8, 10) and not logits.requires_grad
    assert classifier.sha256 == file_sha256(WEIGHTS / "digits_classifier.safetensors")
    assert classifier.name == "digits"
    classifier.train()
    assert not classifier.training  # no dropout: a metric must not be random
    assert accuracy(classifier, x, y) >= 0.97
    extractor = model.feature_extractor("cpu")
    assert extractor.sha256 == classifier.sha256 and extractor.name == "digits"
    # The classifier is built on request, not held: the model's one child is its network.
    assert [name for name, _ in model.named_children()] == ["network"]


# --- the unconditional model, unchanged --------------------------------------------------

def test_the_unconditional_model_is_unchanged():
    model = load_digits_model()
    assert type(model) is DigitsScoreModel and model.num_classes == 0
    assert model.sha256 == UNCONDITIONAL_SHA256
    assert file_sha256(WEIGHTS / "digits_edm.safetensors") == UNCONDITIONAL_SHA256
    assert "num_classes" not in model.manifest["architecture"]["config"]
    assert UNetConfig().to_dict() == model.manifest["architecture"]["config"]
    assert "label_dropout" not in ScoreTrainConfig().to_dict()
    assert not any("label" in name for name in model.network.state_dict())
    # Its outputs at fixed inputs, as computed before conditioning existed.
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    sigma = torch.tensor([0.002, 0.05, 0.5, 2.0, 20.0, 80.0])
    with torch.no_grad():
        out = model.denoise(x, sigma)
    expected = [-2.249257, 0.227254, -0.942407, -1.797496, 0.33244, -0.93944, -0.814508,
                0.484123, -1.007988, 0.213395, 0.063953]
    torch.testing.assert_close(out.flatten()[::37], torch.tensor(expected), rtol=0, atol=1e-4)
    with pytest.raises(ParameterError, match="not a conditional model"):
        model.denoise_labelled(x, sigma, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        model.network(x, sigma, torch.zeros(6, dtype=torch.long))


def test_a_conditional_network_without_labels_is_its_null_class():
    torch.manual_seed(0)
    net = EDMPrecond(dataclasses.replace(TINY, num_classes=3)).eval()
    torch.nn.init.normal_(net.net.label_embed.table.weight)
    torch.nn.init.normal_(net.net.conv_out.weight)
    for module in net.modules():  # undo the zero init, so that labels reach the output
        if isinstance(module, torch.nn.Conv2d) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.2)
    x, sigma = _inputs(4), torch.full((4,), 0.7)
    with torch.no_grad():
        plain = net(x, sigma)
        null = net(x, sigma, torch.full((4,), NULL_LABEL))
        last_row = net(x, sigma, torch.full((4,), 2))
    torch.testing.assert_close(plain, null, rtol=0, atol=0)
    assert (last_row - null).abs().amax() > 1e-3
    assert set(net.state_dict()) - set(EDMPrecond(TINY).state_dict()) == {
        "net.label_embed.table.weight"}


# --- training ------------------------------------------------------------------------

def _record_training_labels(monkeypatch) -> list[torch.Tensor]:
    """The labels every training forward pass gives the network (eval passes excluded)."""
    seen: list[torch.Tensor] = []
    forward = EDMPrecond.forward

    def recording(self, x, sigma, labels=None):
        if self.training:
            seen.append(labels)
        return forward(self, x, sigma, labels)

    monkeypatch.setattr(EDMPrecond, "forward", recording)
    return seen


@pytest.mark.parametrize("p", [0.1, 0.0, 1.0])
def test_training_drops_labels_at_the_stated_rate(tmp_path, monkeypatch, p):
    seen = _record_training_labels(monkeypatch)
    config = dataclasses.replace(
        CONDITIONAL_SCORE_CONFIG, steps=4, batch_size=512, warmup_steps=1, eval_repeats=1,
        label_dropout=p, network=dataclasses.replace(TINY, num_classes=10))
    checkpoint = train_score_model(tmp_path, config, log=lambda message: None,
                                   name="tiny_cond")
    labels = torch.cat(seen)
    assert len(seen) == 4 and labels.shape == (2048,)
    dropped = int((labels == NULL_LABEL).sum())
    kept = labels[labels != NULL_LABEL]
    # Binomial(2048, p): standard deviation 13.6 at p = 0.1; 4 of them allowed.
    assert abs(dropped - p * 2048) <= 4 * (2048 * p * (1 - p)) ** 0.5
    if p < 1:
        assert set(kept.tolist()) == set(range(10))
    assert checkpoint.manifest["training"]["label_dropout"] == p
    assert checkpoint.manifest["architecture"]["config"]["num_classes"] == 10
    assert "test_loss_ema_unconditional" in checkpoint.metrics
    assert load_conditional_digits_model(path=checkpoint.weights_path).num_classes == 10


def test_unconditional_training_gives_the_network_no_labels(tmp_path, monkeypatch):
    seen = _record_training_labels(monkeypatch)
    config = ScoreTrainConfig(steps=2, batch_size=64, warmup_steps=1, eval_repeats=1,
                              network=TINY)
    checkpoint = train_score_model(tmp_path, config, log=lambda message: None)
    assert seen == [None, None]
    assert "label_dropout" not in checkpoint.manifest["training"]
    assert "labels" not in checkpoint.manifest


def test_drop_labels_replaces_entries_by_the_null_label():
    labels = torch.arange(10).repeat(1000)
    out = drop_labels(labels, 0.25, torch.Generator().manual_seed(0))
    dropped = out == NULL_LABEL
    assert abs(int(dropped.sum()) - 2500) <= 4 * (10000 * 0.25 * 0.75) ** 0.5
    assert torch.equal(out[~dropped], labels[~dropped])
    assert torch.equal(drop_labels(labels, 0.0, torch.Generator()), labels)
    with pytest.raises(ValueError, match="label_dropout"):
        ScoreTrainConfig(label_dropout=1.5)


def test_training_curve_has_one_row_per_epoch(tmp_path):
    rows: list[dict] = []
    config = ScoreTrainConfig(steps=7, batch_size=512, warmup_steps=1, eval_repeats=1,
                              network=dataclasses.replace(TINY, num_classes=10))
    train_score_model(tmp_path, config, log=lambda message: None, on_epoch=rows.append,
                      test_every=2)
    # 1442 // 512 = 2 steps per epoch: epochs end at steps 2, 4, 6 and the last at 7.
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 2), (2, 4), (3, 6), (4, 7)]
    assert ["test_loss_ema" in r for r in rows] == [False, True, False, True]
    assert all(r["train_loss"] > 0 and r["lr"] > 0 for r in rows)


def test_train_command_options_are_checked_before_any_training(tmp_path):
    import argparse

    from harness.commands import train as train_command

    parser = argparse.ArgumentParser(prog="harness")
    train_command.add_parser(parser.add_subparsers(dest="command"))
    for argv, message in ((["digits", "--label-dropout", "0.2"], "digits-cond only"),
                          (["digits-cond", "--label-dropout", "1.5"], r"in \[0, 1\]"),
                          (["classifier", "--curve", "c.csv"], "score models")):
        args = parser.parse_args(["train", *argv, "--out", str(tmp_path)])
        with pytest.raises(ParameterError, match=message):
            args.func(args)
    assert not any(tmp_path.iterdir())
