"""A small class-conditional model for metric tests: a Gaussian mixture whose components
are its classes, with labelled reference data and its exact Bayes classifier.

Test-only: the harness's own conditional models are built elsewhere; the class metrics
need only what the model interface promises (`num_classes`, `classifier(device)`,
`ReferenceData.labels`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from harness import ReferenceData
from harness.models.oracle import GaussianMixture
from harness.models.oracle import ring_2d
from harness.core.sde import VPSDE


class BayesClassifier(nn.Module):
    """logits_k(x) = log w_k + log N(x; mu_k, diag v_k): the exact posterior's logits."""

    name = "bayes"

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.register_buffer("log_weights", mixture.weights.log().clone())
        self.register_buffer("means", mixture.means.clone())
        self.register_buffer("variances", mixture.variances.clone())
        digest = hashlib.sha256()
        for tensor in (self.log_weights, self.means, self.variances):
            digest.update(tensor.double().cpu().numpy().tobytes())
        self.sha256 = digest.hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        diff = x.flatten(1)[:, None, :] - self.means                        # (B, K, D)
        log_normal = -0.5 * (diff.square() / self.variances
                             + self.variances.log() + math.log(2 * math.pi)).sum(-1)
        return self.log_weights + log_normal


class LabelledMixture(GaussianMixture):
    """A Gaussian mixture whose component k is class k."""

    REFERENCE_SAMPLES = 2000

    def __init__(self, base: GaussianMixture, with_classifier: bool = True):
        super().__init__(base.weights, base.means, base.variances.sqrt(), base.sde,
                         dtype=base.means.dtype)
        self.num_classes = int(base.means.shape[0])
        self.with_classifier = with_classifier

    def _reference_data(self, split: str, num: Optional[int], seed: int) -> ReferenceData:
        num = self.REFERENCE_SAMPLES if num is None else num
        split_seed = int(hashlib.sha256(f"labelled:{seed}:{split}".encode()).hexdigest()[:15],
                         16)
        gen = torch.Generator().manual_seed(split_seed)
        labels = torch.multinomial(self.weights.cpu(), num, replacement=True, generator=gen)
        noise = torch.randn(num, self.means.shape[1], generator=gen, dtype=self.means.dtype)
        data = self.means.cpu()[labels] + self.variances.cpu()[labels].sqrt() * noise
        return ReferenceData(f"labelled-gmm:{split}:n={num}:seed={seed}", data,
                             f"{num} labelled exact samples ({split})", exact=True,
                             labels=labels)

    def classifier(self, device: Any = "cpu") -> Optional[nn.Module]:
        return BayesClassifier(self).to(device) if self.with_classifier else None

    def sample_class(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One exact sample of the class each label names (what an ideal conditional
        sampler returns)."""
        noise = torch.randn(labels.shape[0], self.means.shape[1], generator=generator,
                            dtype=self.means.dtype)
        return self.means[labels] + self.variances[labels].sqrt() * noise


def labelled_ring(components: int = 8, std: float = 0.1, **kwargs: Any) -> LabelledMixture:
    """The 2-D ring oracle (under VP) with its components as classes."""
    return LabelledMixture(ring_2d(VPSDE(), std=std, components=components), **kwargs)
