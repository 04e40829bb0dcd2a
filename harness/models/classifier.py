"""A small CNN that classifies 8x8 digits; its penultimate layer is the FID feature space.

FID (Heusel et al. 2017) compares Gaussians fitted to the features a fixed classifier
extracts from real and generated images; for ImageNet-like data that classifier is
Inception-v3's pool3 layer. For 8x8 digits the same role is played here by the
`features` layer (64 values by default) of a CNN trained on the digits training split
(`harness.models.training.train_classifier`): conv-conv at 8x8, downsample, conv at 4x4, a
linear layer to 64 features, and the 10-way linear head. SiLU rather than ReLU keeps
every feature informative (no units stuck at exactly 0, which would make the feature
covariance singular).

`DigitsFeatureExtractor` is the frozen network in eval mode. Its `sha256` is the sha256
of its weight file (`harness.models.checkpoint.tensors_sha256` of its state dict), so reference
statistics cached under that key are invalidated whenever the weights change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import tensors_sha256

ARCHITECTURE = "harness.classifier.DigitsClassifier/v1"  # stored in manifests, not a module path


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyperparameters that rebuild the classifier; recorded in its manifest."""

    in_channels: int = 1
    image_size: int = 8
    channels: tuple[int, int] = (32, 64)
    features: int = 64
    num_classes: int = 10
    dropout: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ClassifierConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ClassifierConfig keys: {', '.join(unknown)}")
        values = dict(values)
        if "channels" in values:
            values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


class DigitsClassifier(nn.Module):
    """Images in [-1, 1] (N, 1, 8, 8) -> logits (N, 10); `features` gives the layer before."""

    def __init__(self, config: Optional[ClassifierConfig] = None):
        super().__init__()
        cfg = self.config = config or ClassifierConfig()
        c1, c2 = cfg.channels
        self.conv1 = nn.Conv2d(cfg.in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c1, 3, padding=1)
        self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, c1)
        self.norm2 = nn.GroupNorm(8, c1)
        self.norm3 = nn.GroupNorm(8, c2)
        side = cfg.image_size // 2
        self.fc = nn.Linear(c2 * side * side, cfg.features)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.features, cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (N, features): what the head reads."""
        h = F.silu(self.norm1(self.conv1(x)))
        h = F.silu(self.norm2(self.conv2(h)))
        h = F.avg_pool2d(h, 2)
        h = F.silu(self.norm3(self.conv3(h)))
        return F.silu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


class DigitsFeatureExtractor(nn.Module):
    """Frozen FID feature extractor: images in [-1, 1] (N, 1, 8, 8) -> features (N, F).

    Inputs are used as given (no clipping or rounding: whoever computes a metric decides
    how samples are post-processed, and must do it the same way for every sampler).
    """

    def __init__(self, classifier: DigitsClassifier, sha256: Optional[str] = None):
        super().__init__()
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self._sha256 = sha256

    @property
    def num_features(self) -> int:
        return self.classifier.config.features

    @property
    def sha256(self) -> str:
        """sha256 of the weight file these weights serialise to (see module docstring)."""
        if self._sha256 is None:
            self._sha256 = tensors_sha256(self.classifier.state_dict())
        return self._sha256

    def train(self, mode: bool = True) -> "DigitsFeatureExtractor":
        # Always eval: dropout in a metric would make FID random.
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.to(self._dtype()))

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Class logits (N, 10), e.g. for a classifier-based sample-quality check."""
        return self.classifier(x.to(self._dtype()))

    def _dtype(self) -> torch.dtype:
        return next(self.classifier.parameters()).dtype


class DigitsLogits(nn.Module):
    """The frozen classifier as a model's `classifier()`: images (N, 1, 8, 8) -> logits
    (N, 10), always in eval mode, with the weight file's `sha256` and a `name`."""

    def __init__(self, extractor: DigitsFeatureExtractor, name: str = "digits"):
        super().__init__()
        self.extractor = extractor
        self.name = name

    @property
    def sha256(self) -> str:
        return self.extractor.sha256

    @property
    def num_classes(self) -> int:
        return self.extractor.classifier.config.num_classes

    def train(self, mode: bool = True) -> "DigitsLogits":
        super().train(False)  # no dropout: a metric must not be random
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor.logits(x)


@torch.no_grad()
def accuracy(model: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor,
             batch_size: int = 512) -> float:
    """Fraction of images whose argmax logit is the label; `model` maps images to logits.

    A module is evaluated in eval mode (no dropout) and put back in its previous mode.
    """
    module = model if isinstance(model, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size])
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    if module is not None:
        module.train(was_training)
    return correct / max(len(images), 1)
