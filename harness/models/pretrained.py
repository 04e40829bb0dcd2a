"""The shipped, hash-verified digits models: the EDM score models and the FID classifier.

The score model is a `DigitsScoreModel`: a `NetworkScoreModel` that also gives the
metrics its reference data (the fixed digits splits) and FID features (the classifier).
Its class-conditional sibling (`digits_edm_cond`, trained with label dropout) is a
`ConditionalDigitsScoreModel`: the same, plus `denoise_labelled`, labelled reference data
and the classifier's logits; its plain `denoise` is its unconditional (null-class) denoiser.

Both live in the package's `weights/` folder as safetensors + JSON manifest pairs
(`harness.models.checkpoint`), written by `harness train digits|digits-cond|classifier`.
Every load re-hashes the weight file and refuses it when the hash differs from the
manifest's. The architecture is rebuilt from the config recorded in the manifest, so a
checkpoint trained with other hyperparameters loads without code changes.
"""

from __future__ import annotations

import contextlib
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from torch import Tensor, nn

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .classifier import ARCHITECTURE as CLASSIFIER_ARCHITECTURE
from .classifier import ClassifierConfig, DigitsClassifier, DigitsFeatureExtractor, DigitsLogits
from . import digits
from .digits import DIGITS_SPEC
from ..core.model import (
    NetworkScoreModel, ReferenceData, ScoreModel, check_labels, from_prediction,
)
from ..core.sde import _expand, make_sde
from ..errors import ParameterError
from .unet import ARCHITECTURE as UNET_ARCHITECTURE
from .unet import EDMPrecond, UNetConfig

SCORE_MODEL_FILE = "digits_edm.safetensors"
CONDITIONAL_MODEL_FILE = "digits_edm_cond.safetensors"
CLASSIFIER_FILE = "digits_classifier.safetensors"

Device = Union[str, torch.device]
PathLike = Union[str, Path]


@contextlib.contextmanager
def shipped_checkpoint(file_name: str) -> Iterator[Path]:
    """A filesystem path to a checkpoint in the package's `weights/` folder.

    An installed package normally lies on disk and the path is used as it is. From a
    package that does not (a zip), `importlib.resources` reads the weights and their
    manifest into a temporary folder, since the loader needs both side by side.
    """
    folder = Path(__file__).resolve().parent / "weights"
    if folder.is_dir():
        yield folder / file_name
        return
    package = __name__.rpartition(".")[0] or "harness"
    source = resources.files(package).joinpath("weights")
    with tempfile.TemporaryDirectory() as tmp:
        for name in (file_name, Path(file_name).stem + ".json"):
            entry = source.joinpath(name)
            if entry.is_file():
                (Path(tmp) / name).write_bytes(entry.read_bytes())
        yield Path(tmp) / file_name


def _sigma_condition(t: Tensor, sigma: Tensor) -> Tensor:
    """The EDM network is conditioned on the noise level, not on the time."""
    return sigma


def _checkpoint(path: Optional[PathLike], default: str, device: Device) -> Checkpoint:
    if path is not None:
        return load_checkpoint(path, device)
    with shipped_checkpoint(default) as shipped:
        return load_checkpoint(shipped, device)


def _expect(checkpoint: Checkpoint, kind: str, architecture: str) -> None:
    manifest = checkpoint.manifest
    found = (manifest.get("kind"), manifest.get("architecture", {}).get("name"))
    if found != (kind, architecture):
        raise CheckpointError(
            f"{checkpoint.manifest_path} describes a {found[0]!r} with architecture "
            f"{found[1]!r}; expected a {kind!r} with architecture {architecture!r}")


class DigitsScoreModel(NetworkScoreModel):
    """A score network on the 8x8 digits, with the digits splits as its reference data and
    the shipped classifier's features for FID/KID."""

    reference_splits = digits.SPLITS

    def _reference_data(self, split: str, num: Optional[int], seed: int) -> ReferenceData:
        """The first `num` images (default: all) of the fixed split, with their classes
        for a conditional model; `seed` is unused (the split is stored, not drawn)."""
        images, labels = digits.load_split(split)  # type: ignore[arg-type]
        images, labels = (images, labels) if num is None else (images[:num], labels[:num])
        fingerprint = digits.split_fingerprint()[:16]
        return ReferenceData(f"digits:{split}:n={len(images)}:{fingerprint}", images,
                             f"first {len(images)} digits {split} images",
                             labels=labels if self.num_classes else None)

    def feature_extractor(self, device: Any = "cpu") -> nn.Module:
        """The shipped digits classifier's feature layer (`load_feature_extractor`)."""
        extractor = load_feature_extractor(device)
        extractor.name = "digits"  # type: ignore[assignment]
        return extractor


class ConditionalDigitsScoreModel(DigitsScoreModel):
    """The class-conditional digits model: labels 0..9, `NULL_LABEL` the learned null class.

    The inherited `_denoise` calls the network without labels, i.e. with the null class
    for every row: the unconditional denoiser, at the unconditional model's cost.
    """

    def __init__(self, network: nn.Module, *args: Any, **kwargs: Any):
        super().__init__(network, *args, **kwargs)
        self.num_classes = int(network.num_classes)
        if self.num_classes < 1:
            raise ParameterError("ConditionalDigitsScoreModel needs a class-conditional "
                                 "network (num_classes > 0)")

    def _denoise_labelled(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, self.num_classes)
        t = self.sde.t_of_sigma(sigma)
        if self.sde.unit_scale:  # as `NetworkScoreModel._denoise`, with the labels
            s, x_t = 1.0, x
        else:
            s = _expand(self.sde.scale(t), x)
            x_t = s * x
        out = self.network(x_t, self.condition(t, sigma), labels)
        return from_prediction(self.parametrization, out, x, s, _expand(sigma, x))

    def classifier(self, device: Any = "cpu") -> nn.Module:
        """The shipped digits classifier's logits (`DigitsLogits`), frozen."""
        return DigitsLogits(load_feature_extractor(device), name="digits")


def build_digits_model(checkpoint: Checkpoint, device: Device = "cpu") -> ScoreModel:
    """A `DigitsScoreModel` (x0-parametrised, sigma-conditioned) from a loaded checkpoint;
    a `ConditionalDigitsScoreModel` when its config has classes."""
    _expect(checkpoint, "score_model", UNET_ARCHITECTURE)
    manifest = checkpoint.manifest
    network = EDMPrecond(UNetConfig.from_dict(manifest["architecture"]["config"]))
    network.load_state_dict(checkpoint.tensors)
    network.to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    sde = make_sde(manifest["sde"]["name"], **manifest["sde"]["params"])
    kind = ConditionalDigitsScoreModel if network.num_classes else DigitsScoreModel
    model = kind(network, sde, DIGITS_SPEC, parametrization="x0",
                 condition=_sigma_condition)
    model.eval()
    model.sha256 = checkpoint.sha256  # type: ignore[attr-defined]
    model.manifest = manifest  # type: ignore[attr-defined]
    return model


def load_digits_model(device: Device = "cpu", path: Optional[PathLike] = None) -> ScoreModel:
    """The shipped EDM digits score model (or the checkpoint at `path`), hash-verified.

    Returns a `DigitsScoreModel` over `EDMSDE(sigma_min, sigma_max)` from the manifest,
    with `DIGITS_SPEC` as its data; extra attributes `sha256` and `manifest` identify it.
    """
    return build_digits_model(_checkpoint(path, SCORE_MODEL_FILE, device), device)


def load_conditional_digits_model(device: Device = "cpu",
                                  path: Optional[PathLike] = None) -> ScoreModel:
    """The shipped class-conditional digits model (or the checkpoint at `path`, which must
    be class-conditional), hash-verified: a `ConditionalDigitsScoreModel`."""
    checkpoint = _checkpoint(path, CONDITIONAL_MODEL_FILE, device)
    config = checkpoint.manifest.get("architecture", {}).get("config", {})
    if not config.get("num_classes"):
        raise CheckpointError(f"{checkpoint.manifest_path} describes an unconditional score "
                              f"model; a class-conditional one (num_classes > 0) is needed")
    return build_digits_model(checkpoint, device)


def load_feature_extractor(device: Device = "cpu",
                           path: Optional[PathLike] = None) -> DigitsFeatureExtractor:
    """The shipped digits classifier (or the one at `path`) as a frozen FID extractor.

    Its `sha256` is the verified weight file's hash; `manifest` holds its metrics.
    """
    checkpoint = _checkpoint(path, CLASSIFIER_FILE, device)
    _expect(checkpoint, "classifier", CLASSIFIER_ARCHITECTURE)
    classifier = DigitsClassifier(
        ClassifierConfig.from_dict(checkpoint.manifest["architecture"]["config"]))
    classifier.load_state_dict(checkpoint.tensors)
    extractor = DigitsFeatureExtractor(classifier.to(device), sha256=checkpoint.sha256)
    extractor.manifest = checkpoint.manifest  # type: ignore[attr-defined]
    return extractor.eval()
