"""Classifier-free guidance (Ho & Salimans 2022) as a model around a conditional model.

    D_w(x; sigma, c) = D(x; sigma) + w (D(x; sigma | c) - D(x; sigma)),

with D(x; sigma) the unconditional denoiser (the null label of label dropout). The score
is affine in the denoiser (`harness.core.model`), so this is the same combination of the
scores: s_w = s_u + w (s_c - s_u). A `GuidedModel` is an ordinary `ScoreModel` bound to
one batch's labels, so every sampler, built-in or third-party, runs on it unchanged.

What it costs: for w not in {0, 1} one guided evaluation runs the network once on a
doubled batch (conditional rows, then unconditional rows), one call of 2B rows; for w = 1
(purely conditional) or w = 0 (unconditional) one call of B rows. Counters wrapped around
the guided model and around the conditional one (`harness.core.counting`) tell the two
apart: the guided evaluations are the sampler's NFE, the network's rows its real cost.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import ParameterError
from .model import NULL_LABEL, ScoreModel


class GuidedModel(ScoreModel):
    """`base` guided towards `labels` with scale `scale` (w >= 0); samplers see a model.

    `labels` is (B,) int64 on the model's device: row i of every batch the sampler passes
    is sample i. A sampler must evaluate the whole batch in its row order (as every
    sampler of the contract does); another batch size is refused with a clear error.
    """

    def __init__(self, base: ScoreModel, labels: Tensor, scale: float):
        super().__init__(base.sde, base.data)
        if not base.num_classes:
            raise ParameterError(f"guidance needs a conditional model; "
                                 f"{type(base).__name__} has no classes")
        if not scale >= 0:
            raise ParameterError(f"guidance scale must be >= 0, got {scale}")
        self.base = base
        self.labels = labels
        self.scale = float(scale)
        self.num_classes = base.num_classes
        self._null = torch.full_like(labels, NULL_LABEL)
        # Rows of the doubled batch: conditional first, unconditional second.
        self._both = torch.cat([labels, self._null])

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        if x.shape[0] != self.labels.shape[0]:
            raise ParameterError(
                f"a guided model is bound to its batch of {self.labels.shape[0]} labelled "
                f"samples; the sampler evaluated {x.shape[0]} rows (evaluate the whole "
                f"batch, in its row order)")
        if network_rows(self.scale) == 1:  # w = 1: conditional; w = 0: unconditional
            return self.base.denoise_labelled(
                x, sigma, self.labels if self.scale == 1.0 else self._null)
        both = self.base.denoise_labelled(torch.cat([x, x]), _doubled(sigma), self._both)
        conditional, unconditional = both.chunk(2)
        return torch.lerp(unconditional, conditional, self.scale)

    def denoise_labelled(self, x: Tensor, sigma, labels: Tensor) -> Tensor:
        # Unguided, for explicit labels: the conditional model's own call.
        return self.base.denoise_labelled(x, sigma, labels)

    def classifier(self, device="cpu"):
        return self.base.classifier(device)

    def feature_extractor(self, device="cpu"):
        return self.base.feature_extractor(device)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype


def network_rows(scale: Optional[float]) -> int:
    """Network rows one evaluation of one sample costs at guidance scale `scale`: 2 for
    w not in {0, 1} (one doubled batch), else 1 (None: an unguided model)."""
    return 1 if scale is None or float(scale) in (0.0, 1.0) else 2


def _doubled(sigma: Tensor) -> Tensor:
    """sigma for the doubled batch; one level for the batch stays one stride-0 element
    (`per_sample`), so a model can still take its one-level path."""
    if sigma.ndim == 1 and sigma.shape[0] > 0 and sigma.stride(0) == 0:
        return sigma[:1].expand(2 * sigma.shape[0])
    return torch.cat([sigma, sigma])


def guided(model: ScoreModel, labels: Optional[Tensor], scale: Optional[float]
           ) -> ScoreModel:
    """The model a sampler runs on: `model` itself when `scale` is None (no guidance),
    else a `GuidedModel` bound to `labels`."""
    if scale is None:
        return model
    if labels is None:
        raise ParameterError("a guided run needs each sample's label")
    return GuidedModel(model, labels, scale)


__all__ = ["GuidedModel", "guided", "network_rows"]
