"""Training is reproducible bit for bit and writes checkpoints the loaders accept."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib

import torch

from harness.commands import train as train_command
from harness.models.pretrained import load_digits_model, load_feature_extractor
from harness.models.training import (
    ClassifierTrainConfig, ScoreTrainConfig, lr_factor, train_classifier, train_score_model,
)
from harness.models.unet import UNetConfig

TINY_SCORE = ScoreTrainConfig(steps=3, batch_size=16, warmup_steps=1, eval_repeats=1,
                              network=UNetConfig(channels=(8, 16), emb_dim=16, groups=4))
TINY_CLASSIFIER = ClassifierTrainConfig(steps=3, batch_size=16, warmup_steps=1)


def _quiet(message: str) -> None:
    pass


def test_tiny_score_training_is_bit_reproducible_and_loads(tmp_path):
    threads = torch.get_num_threads()
    first = train_score_model(tmp_path / "a", TINY_SCORE, log=_quiet)
    second = train_score_model(tmp_path / "b", TINY_SCORE, log=_quiet)
    assert first.sha256 == second.sha256
    assert torch.get_num_threads() == threads  # settings restored
    assert not torch.are_deterministic_algorithms_enabled()
    other = train_score_model(tmp_path / "c", dataclasses.replace(TINY_SCORE, seed=1),
                              log=_quiet)
    assert other.sha256 != first.sha256
    model = load_digits_model(path=first.weights_path)
    assert model.network.config == TINY_SCORE.network
    assert first.manifest["training"]["steps"] == 3
    assert torch.isfinite(model.denoise(torch.zeros(2, 1, 8, 8), 1.0)).all()


def test_tiny_classifier_training_is_reproducible_and_loads(tmp_path):
    first = train_classifier(tmp_path / "a", TINY_CLASSIFIER, log=_quiet)
    second = train_classifier(tmp_path / "b", TINY_CLASSIFIER, log=_quiet)
    assert first.sha256 == second.sha256
    assert 0 <= first.metrics["test_accuracy"] <= 1
    extractor = load_feature_extractor(path=first.manifest_path)
    assert extractor.sha256 == first.sha256


def test_learning_rate_schedule():
    assert lr_factor(0, 100, 10, 0.1) == 0.1
    assert lr_factor(9, 100, 10, 0.1) == 1.0
    assert lr_factor(10, 100, 10, 0.1) == 1.0
    assert abs(lr_factor(100, 100, 10, 0.1) - 0.1) < 1e-12


def test_train_command_parses_and_reports(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="harness")
    train_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "classifier", "--out", str(tmp_path), "--steps", "2",
                              "--quiet"])
    assert args.func is train_command.run and args.out == tmp_path
    assert args.func(args) == 0
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and "bit-identical" in out
    assert (tmp_path / "digits_classifier.safetensors").is_file()
    default = parser.parse_args(["train", "digits"])
    assert default.out is None
    # Where the loaders look: the shipped files are there.
    assert (train_command.shipped_dir() / "digits_edm.safetensors").is_file()


def test_train_writes_outside_the_shipped_weights_unless_told(tmp_path, monkeypatch, capsys):
    parser = argparse.ArgumentParser(prog="harness")
    train_command.add_parser(parser.add_subparsers(dest="command"))
    shipped = train_command.shipped_dir() / "digits_classifier.safetensors"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(["train", "classifier", "--steps", "2", "--quiet"])
    assert args.func(args) == 0
    assert (tmp_path / "runs" / "weights" / "digits_classifier.safetensors").is_file()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    # Two steps are not the shipped recipe: compared with the shipped checkpoint.
    assert "DIFFERENT from the shipped digits_classifier" in capsys.readouterr().out
