"""The one model interface every sampler and metric talks to.

A `ScoreModel` couples a network with its forward SDE and exposes

* `denoise(x, sigma)`: the denoiser D(x; sigma) in the EDM convention, i.e. for
  x = x_0 + sigma n (unscaled variable), D approximates E[x_0 | x];
* `score(x, t)`: grad log p_t(x) in the SDE's own (scaled) variable;
* `ode_drift(x, t)`: the probability-flow ODE drift dx/dt;
* `data`: what the data look like (shape, value range, quantisation levels);
* `num_classes` and `denoise_labelled(x, sigma, labels)`: a class-conditional model's
  denoiser for given labels (`NULL_LABEL` rows unconditional); its plain `denoise` is the
  unconditional one. Guidance is a wrapper around these (`harness.core.guidance`);
* `reference_data(split, num, seed)`: samples of the data the model stands for (the
  "real" side of FID/KID, the NLL's test points, exact samples of an oracle), with an
  identity, and `feature_extractor(device)`: the features FID/KID compare them in. The
  metrics ask the model for these instead of knowing particular models.

The two views are tied by x_t = s(t) x_unscaled and
score(x, t) = (s D(x / s; sigma) - x) / (s^2 sigma^2).

A model keeps no count of its evaluations: counting and timing them is a wrapper's job
(`harness.core.counting`), put around the model by whoever wants the count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union

import torch
from torch import Tensor, nn

from ..errors import ParameterError
from .sde import SDE, Time, _expand


@dataclass(frozen=True)
class DataSpec:
    """Shape of one sample, its value range and, for quantised data, the number of levels.

    `levels` is what makes bits/dim right: a value range (lo, hi) with `levels` equally
    spaced values has bin width (hi - lo) / (levels - 1). `levels=None` is continuous data.
    """

    shape: tuple[int, ...]
    value_range: tuple[float, float] = (-1.0, 1.0)
    levels: Optional[int] = None

    @property
    def dim(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def bin_width(self) -> Optional[float]:
        if self.levels is None:
            return None
        lo, hi = self.value_range
        return (hi - lo) / (self.levels - 1)


@dataclass(frozen=True)
class ReferenceData:
    """Samples of the data a model stands for, in its data variable, with an identity.

    `data_id` must change whenever the samples do: metrics key on-disk statistics caches
    by it (with the feature extractor's hash). `exact` is True when the samples are drawn
    from the model's own distribution at t = 0 (an analytic oracle), so that a distance
    to them measures the sampler's error alone; real data (a test split) are not exact.
    """

    data_id: str
    data: Tensor
    description: str = ""
    exact: bool = False
    #: Each sample's class, (N,) int64, for a conditional model's data; else None.
    labels: Optional[Tensor] = None


def per_sample(value: Union[float, Tensor], x: Tensor) -> Tensor:
    """A noise level or time as a (B,) tensor on x's device and dtype (no host sync).

    One value for the whole batch comes back as a stride-0 view of a single element: a
    model can then tell "one level" from "one level per row" by its strides, without
    reading values (the exact oracle takes its matrix-product path on that).
    """
    if isinstance(value, Tensor):
        value = value.to(device=x.device, dtype=x.dtype)
        return value.expand(x.shape[0]) if value.ndim == 0 else value
    return torch.full((1,), value, device=x.device, dtype=x.dtype).expand(x.shape[0])


#: The label of a row to be denoised unconditionally (the "null" class of label dropout).
NULL_LABEL = -1

def check_labels(labels: Tensor, num_classes: int) -> None:
    """Refuse a label outside 0 .. num_classes - 1 and `NULL_LABEL`, for labels on the
    CPU only: reading them from a GPU would wait for it on every network call."""
    if labels.device.type != "cpu":
        return
    bad = (labels < NULL_LABEL) | (labels >= num_classes)
    if bool(bad.any()):
        raise ParameterError(f"labels must be in 0..{num_classes - 1} or NULL_LABEL "
                             f"({NULL_LABEL}), got {labels[bad][0].item()}")


def _is_one(value: Time) -> bool:
    """A Python number equal to 1 (tensors are never inspected: that would sync a GPU)."""
    return not isinstance(value, Tensor) and value == 1


class ScoreModel(nn.Module, ABC):
    """A score network with its SDE. Subclasses implement `_denoise` (and may add `_score`)."""

    def __init__(self, sde: SDE, data: DataSpec):
        super().__init__()
        self.sde = sde
        self.data = data

    # --- what subclasses provide ------------------------------------------------------
    @abstractmethod
    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x; sigma) for unscaled x and per-sample sigma of shape (B,).

        When one level serves the batch, sigma is a stride-0 view of one element
        (`per_sample`): read it, never write into it in place.
        """

    def _score(self, x: Tensor, t: Time) -> Tensor:
        """grad log p_t(x) = (s D(x / s; sigma) - x) / (s sigma)^2, from the denoiser.

        Overrides receive t as a (B,) tensor. This default also takes a Python float (one
        time for the whole batch, as every fixed-grid sampler has): s and sigma are then
        plain numbers, and s = 1 (VE, EDM) costs no pass over the state.
        """
        s, sigma = self.sde.scale(t), self.sde.sigma(t)
        unit = self.sde.unit_scale or _is_one(s)
        denoised = self._denoise(x if unit else x / _expand(s, x), per_sample(sigma, x))
        residual = denoised - x if unit else _expand(s, x) * denoised - x
        return residual / _expand(s**2 * sigma**2, x)

    #: False for a network with untrained (random) weights, kept to measure speed:
    #: metrics of sample quality or likelihood are refused on it
    #: (`harness.bench.configuration.check_trained`).
    trained: bool = True

    # --- class conditioning (models with num_classes > 0) ------------------------------
    #: Classes a conditional model knows: labels 0 .. num_classes - 1. 0: unconditional.
    num_classes: int = 0

    def _denoise_labelled(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        """D(x; sigma | label) for a conditional model; rows whose label is `NULL_LABEL`
        get the unconditional denoiser. `labels` is (B,) int64 on x's device. A model
        trained with label dropout answers both from one network evaluation."""
        raise NotImplementedError(f"{type(self).__name__} is not a conditional model "
                                  f"(num_classes = {self.num_classes})")

    # --- reference data ---------------------------------------------------------------
    #: The splits `reference_data` serves, e.g. ("train", "test"); empty: it has none.
    reference_splits: tuple[str, ...] = ()
    #: Whether `reference_data` gives exact samples of this model's own distribution (an
    #: analytic oracle) rather than real data; distances to exact samples need it.
    reference_is_exact: bool = False

    def _reference_data(self, split: str, num: Optional[int], seed: int) -> ReferenceData:
        """Subclasses with `reference_splits` implement this; arguments are checked."""
        raise NotImplementedError(f"{type(self).__name__} declares reference_splits but "
                                  f"does not implement _reference_data")

    def reference_data(self, split: str = "test", num: Optional[int] = None,
                       seed: int = 0) -> ReferenceData:
        """Samples of the data this model stands for: the first `num` (default: the
        model's own choice) of split `split`; `seed` picks the draw where the samples are
        drawn rather than stored. The same arguments give the same samples and `data_id`.
        """
        if not self.reference_splits:
            raise ParameterError(
                f"model {type(self).__name__} provides no reference data: set its "
                f"reference_splits and implement _reference_data(split, num, seed)")
        if split not in self.reference_splits:
            raise ParameterError(f"reference data split must be one of "
                                 f"{', '.join(self.reference_splits)}, got {split!r}")
        if num is not None and (isinstance(num, bool) or not isinstance(num, int)
                                or num < 1):
            raise ParameterError(f"number of reference samples must be a positive integer "
                                 f"or None, got {num!r}")
        ref = self._reference_data(split, num, int(seed))
        if not isinstance(ref, ReferenceData) or ref.data.shape[1:] != self.data.shape:
            shape = getattr(getattr(ref, "data", None), "shape", None)
            raise ParameterError(
                f"{type(self).__name__}._reference_data must return ReferenceData whose "
                f"data have shape (N, {', '.join(map(str, self.data.shape))}), got "
                f"{type(ref).__name__} with shape {tuple(shape) if shape else None}")
        if ref.labels is not None and tuple(ref.labels.shape) != (ref.data.shape[0],):
            raise ParameterError(f"{type(self).__name__}._reference_data: labels must have "
                                 f"shape ({ref.data.shape[0]},), got "
                                 f"{tuple(ref.labels.shape)}")
        if ref.exact != self.reference_is_exact:
            raise ParameterError(f"{type(self).__name__}: ReferenceData.exact = {ref.exact} "
                                 f"but reference_is_exact = {self.reference_is_exact}")
        return ref

    # --- what the samples become (latent models) ----------------------------------------
    #: True for a model whose states are latents that `decode` maps to the samples.
    decodes: bool = False

    def decode(self, x: Tensor) -> Tensor:
        """The samples for final states x of shape (B, *data.shape): x itself, or a
        latent model's decoded images (`output_spec`). The runner applies it after
        sampling, timed apart (`decode_s`): no part of the sampler's wall-clock or NFE."""
        return x

    @property
    def output_spec(self) -> DataSpec:
        """What the samples look like after `decode`: `data`, unless the model decodes."""
        return self.data

    def feature_extractor(self, device: Any = "cpu") -> Optional[nn.Module]:
        """The network whose features FID/KID compare for this model's data, or None
        (the default) when the flattened samples themselves serve (low-dimensional data).

        The module maps (B, *data.shape) to (B, F) and has `sha256` (names its weights;
        keys cached statistics) and `num_features`; an optional `name` is logged.
        """
        return None

    def classifier(self, device: Any = "cpu") -> Optional[nn.Module]:
        """A classifier of this model's data, or None (the default): a module mapping
        (B, *data.shape) to (B, num_classes) logits, which the class-accuracy metric
        applies to conditional samples. It has `sha256` (names its weights; for an exact
        Bayes classifier, its parameters) and may have `name`."""
        return None

    # --- the interface samplers and metrics call --------------------------------------
    def denoise(self, x: Tensor, sigma: Union[float, Tensor]) -> Tensor:
        """D(x; sigma) in the EDM convention. One network evaluation per call."""
        return self._denoise(x, per_sample(sigma, x))

    def denoise_labelled(self, x: Tensor, sigma: Union[float, Tensor],
                         labels: Tensor) -> Tensor:
        """D(x; sigma | labels) of a conditional model. One network evaluation per call
        (of x.shape[0] rows: a guided evaluation on a doubled batch counts 2B rows)."""
        if not self.num_classes:
            raise ParameterError(f"{type(self).__name__} is not a conditional model: it "
                                 f"takes no labels")
        if labels.shape != (x.shape[0],):
            raise ParameterError(f"labels must have shape ({x.shape[0]},) for a batch of "
                                 f"{x.shape[0]}, got {tuple(labels.shape)}")
        return self._denoise_labelled(x, per_sample(sigma, x), labels)

    def score(self, x: Tensor, t: Time) -> Tensor:
        """grad log p_t(x) in the SDE's scaled variable. One network evaluation per call."""
        if not isinstance(t, Tensor) and type(self)._score is ScoreModel._score:
            return self._score(x, float(t))  # scalar coefficients: see `_score`
        return self._score(x, per_sample(t, x))

    def ode_drift(self, x: Tensor, t: Time) -> Tensor:
        """dx/dt of the probability-flow ODE at (x, t). One network evaluation per call."""
        return self.sde.ode_drift(x, t, self.score(x, t))

    def forward(self, x: Tensor, t: Time) -> Tensor:
        return self.score(x, t)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        for tensor in self.buffers():
            return tensor.dtype
        return torch.get_default_dtype()


Parametrization = Literal["eps", "x0", "v", "score"]
PARAMETRIZATIONS: tuple[str, ...] = ("eps", "x0", "v", "score")


def _condition_on_t(t: Tensor, sigma: Tensor) -> Tensor:
    return t


class NetworkScoreModel(ScoreModel):
    """Adapts a network `net(x_t, c)` trained on `sde` to the model interface.

    The network sees the SDE's scaled variable x_t = s(t) x and a conditioning value
    c = condition(t, sigma) (the time t by default; pass e.g. `lambda t, s: s` for a
    network conditioned on the noise level). Its output is read according to
    `parametrization` (with x_t = alpha x_0 + beta eps, alpha = s, beta = s sigma):

    * ``"eps"``:   the noise eps;
    * ``"x0"``:    the clean sample x_0 (this is what EDM-preconditioned networks give);
    * ``"v"``:     v = alpha eps - beta x_0 (Salimans & Ho 2022);
    * ``"score"``: grad log p_t(x_t).

    Each is converted once, here, into the denoiser D; samplers never see the difference.
    """

    def __init__(self, network: nn.Module, sde: SDE, data: DataSpec,
                 parametrization: Parametrization = "eps",
                 condition: Callable[[Tensor, Tensor], Tensor] = _condition_on_t):
        super().__init__(sde, data)
        if parametrization not in PARAMETRIZATIONS:
            from ..errors import ParameterError

            raise ParameterError(
                f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, "
                f"got {parametrization!r}")
        self.network = network
        self.parametrization = parametrization
        self.condition = condition

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        t = self.sde.t_of_sigma(sigma)
        if self.sde.unit_scale:  # x_t = x: no pass over the state for s = 1
            s, x_t = 1.0, x
        else:
            s = _expand(self.sde.scale(t), x)
            x_t = s * x
        out = self.network(x_t, self.condition(t, sigma))
        return from_prediction(self.parametrization, out, x, s, _expand(sigma, x))


def from_prediction(parametrization: str, out: Tensor, x: Tensor, s, sigma) -> Tensor:
    """The denoiser D(x; sigma) from a network output; x is unscaled, x_t = s x."""
    if parametrization == "eps":
        return x - sigma * out
    if parametrization == "x0":
        return out
    if parametrization == "v":
        alpha, beta = s, s * sigma
        return (alpha * (s * x) - beta * out) / (alpha**2 + beta**2)
    if parametrization == "score":
        return x + s * sigma**2 * out
    raise ValueError(parametrization)


def to_prediction(parametrization: str, denoised: Tensor, x: Tensor, s, sigma) -> Tensor:
    """Inverse of `from_prediction`: what a network of that parametrization would output."""
    if parametrization == "eps":
        return (x - denoised) / sigma
    if parametrization == "x0":
        return denoised
    if parametrization == "v":
        eps = (x - denoised) / sigma
        return s * eps - s * sigma * denoised
    if parametrization == "score":
        return (denoised - x) / (s * sigma**2)
    raise ValueError(parametrization)
