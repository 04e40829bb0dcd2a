"""Counting (and timing) network evaluations: a wrapper around a model, never the model.

A `ScoreModel` is the denoiser with its process and data; it keeps no count. Whoever
wants a count wraps it, as k-diffusion's denoiser wrappers wrap a foreign network:
`CountedModel(model)` is a `ScoreModel` that passes every `denoise`, `denoise_labelled`
and `score` call (and so every `ode_drift`) on to `model` and adds one call of
x.shape[0] rows to its own `nfe`. Everything else (the process, the data, the classes,
reference data, feature extractor, classifier, device, dtype) is the wrapped model's.

Counts are per wrapper, so work done on the bare model (a metric's likelihood, a warm-up
forward pass) cannot enter them: the runner wraps the model afresh for each trial and
reads the trial's NFE from that wrapper alone. Given a `NetworkClock`, the wrapper also
times each call it passes on inside it (`harness.core.network_clock`).

Wrappers nest. Under classifier-free guidance (`harness.core.guidance`) the runner
samples on `CountedModel(GuidedModel(CountedModel(model, clock), labels, w))`: the outer
counter counts guided evaluations (B rows each, the sampler's NFE), the inner one what
the network ran (one call of 2B rows per guided evaluation for w not in {0, 1}).
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from .model import ReferenceData, ScoreModel
from .network_clock import NetworkClock
from .sde import Time

#: What a call enters when no clock is given (reusable: it holds no state).
_UNTIMED = contextlib.nullcontext()


class NFECounter:
    """Counts network evaluations: calls, and rows (one row = one sample evaluated once)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.rows = 0

    def add(self, batch: int) -> None:
        self.calls += 1
        self.rows += batch

    def per_sample(self, num_samples: int) -> float:
        """Mean evaluations per sample over everything counted since the last reset."""
        return self.rows / num_samples if num_samples else 0.0

    def __repr__(self) -> str:
        return f"NFECounter(calls={self.calls}, rows={self.rows})"


class CountedModel(ScoreModel):
    """`inner` with its evaluations counted in `nfe` and, given `clock`, timed in it.

    `nfe` may be a counter shared with other wrappers (e.g. the guided models of one
    run's batches, each bound to its batch's labels); by default the wrapper's own. Only
    calls through the public interface count: the uncounted `_denoise`, `_score` and
    `_denoise_labelled` pass straight through, so an evaluation that bypasses the counter
    is still seen wherever the wrapped model's own are (the sampler kit's `nfe` check).
    """

    def __init__(self, inner: ScoreModel, clock: Optional[NetworkClock] = None,
                 nfe: Optional[NFECounter] = None):
        super().__init__(inner.sde, inner.data)
        self.inner = inner
        self.clock = clock
        self.nfe = NFECounter() if nfe is None else nfe
        self.num_classes = inner.num_classes
        self.reference_splits = inner.reference_splits
        self.reference_is_exact = inner.reference_is_exact

    # --- counted: the network's evaluations --------------------------------------------
    def denoise(self, x: Tensor, sigma: Union[float, Tensor]) -> Tensor:
        with self.clock or _UNTIMED:
            out = self.inner.denoise(x, sigma)
        self.nfe.add(x.shape[0])
        return out

    def denoise_labelled(self, x: Tensor, sigma: Union[float, Tensor],
                         labels: Tensor) -> Tensor:
        with self.clock or _UNTIMED:
            out = self.inner.denoise_labelled(x, sigma, labels)
        self.nfe.add(x.shape[0])
        return out

    def score(self, x: Tensor, t: Time) -> Tensor:
        with self.clock or _UNTIMED:
            out = self.inner.score(x, t)
        self.nfe.add(x.shape[0])
        return out

    # --- uncounted: what a sampler should not call, passed on as it is -----------------
    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.inner._denoise(x, sigma)

    def _score(self, x: Tensor, t: Time) -> Tensor:
        return self.inner._score(x, t)

    def _denoise_labelled(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        return self.inner._denoise_labelled(x, sigma, labels)

    # --- the wrapped model's assets --------------------------------------------------
    def _reference_data(self, split: str, num: Optional[int], seed: int) -> ReferenceData:
        return self.inner._reference_data(split, num, seed)

    def feature_extractor(self, device: Any = "cpu") -> Optional[nn.Module]:
        return self.inner.feature_extractor(device)

    def classifier(self, device: Any = "cpu") -> Optional[nn.Module]:
        return self.inner.classifier(device)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype


__all__ = ["CountedModel", "NFECounter"]
