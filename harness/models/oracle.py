"""Gaussian mixtures: score models whose score, denoiser and log-density are exact.

Under Gaussian noising a mixture stays a mixture: component k with mean mu_k and
diagonal variance v_k becomes, in the unscaled variable x = x_t / s(t), a Gaussian
with mean mu_k and variance v_k + sigma(t)^2. Hence, for every t and every SDE,

    log p_t(x_t) = logsumexp_k [log w_k + log N(x_t / s; mu_k, v_k + sigma^2)] - D log s,
    D(x; sigma)  = sum_k r_k(x) [mu_k + v_k / (v_k + sigma^2) (x - mu_k)]   (Tweedie),

with r_k the posterior responsibilities. This is the ground truth every sampler and
metric in the harness is tested against.

`ConditionalGaussianMixture` reads the component as the class (K classes): given class
c the data are the single Gaussian N(mu_c, v_c), whose denoiser is the Tweedie term
alone, D(x; sigma | c) = mu_c + v_c / (v_c + sigma^2) (x - mu_c), and whose exact Bayes
classifier at t = 0 has logits log w_c + log N(x; mu_c, v_c). The unconditional model
(the null label) is the mixture itself, so a guided sampler has a closed-form target.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from torch import nn

from ..core.model import NULL_LABEL, DataSpec, ReferenceData, ScoreModel
from ..core.sde import SDE, Time, _expand

ArrayLike = Union[Tensor, Sequence]
_LOG_2PI = math.log(2 * math.pi)


class GaussianMixture(ScoreModel):
    """A mixture of Gaussians with isotropic or diagonal covariance, under any SDE.

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal standard deviations.
        sde: the forward process that noises the mixture.
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike, stds: ArrayLike, sde: SDE,
                 dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        weights = torch.as_tensor(weights, dtype=dtype)
        stds = torch.as_tensor(stds, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k, d = means.shape
        if weights.shape != (k,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
        if stds.ndim == 1:
            stds = stds[:, None].expand(k, d)
        if stds.shape != (k, d) or (stds <= 0).any():
            raise ValueError(f"stds must be positive with shape ({k},) or ({k}, {d})")
        super().__init__(sde, DataSpec(shape=(d,), value_range=(-math.inf, math.inf)))
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means.clone())
        self.register_buffer("variances", stds.pow(2).contiguous())

    # --- exact quantities in the unscaled variable at noise level sigma -------------
    def _posterior(self, x: Tensor, sigma: Tensor, scale: Optional[Tensor] = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k N(x / s; mu_k, v_k + sigma^2) (B, K) up to a term common to every k,
        and 1/(s^2 var), mu/(s var), each (S, K, D).

        sigma (and the scale s, 1 if None) hold S = 1 level (shared by the batch) or
        S = B (one per row); the same contractions serve both. For S = 1 they are
        (B, D) x (D, K) products and nothing of size B x K x D is built; for S = B every
        row is exact at its own level. s is folded into the (S, K, D) constants rather
        than dividing the state by it. (einsum, not a matmul against a transposed view:
        its rounding does not change with the batch size, which keeps sample i
        independent of its batch-mates.)
        """
        var = self.variances + sigma[:, None, None] ** 2
        inv = var.reciprocal()
        mu_inv = self.means * inv
        per_level = (self.means * mu_inv).sum(-1) + torch.log(var).sum(-1)      # (S, K)
        constant = torch.log(self.weights) - 0.5 * (per_level + x.shape[1] * _LOG_2PI)
        if scale is not None:
            mu_inv = mu_inv / scale[:, None, None]
            inv = inv / scale[:, None, None] ** 2
        quad = (torch.einsum("...d,...kd->...k", x * x, inv)
                - 2 * torch.einsum("...d,...kd->...k", x, mu_inv))
        return constant - 0.5 * quad, inv, mu_inv

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        # E[x_0 | x] = sum_k r_k (mu_k + v_k / (v_k + sigma^2) (x - mu_k))
        #            = x - sigma^2 * score, with score = sum_k r_k (mu_k - x) / var_k.
        sigma = _levels(sigma, x)
        return torch.addcmul(x, _expand(sigma, x) ** 2, self._mixture_score(x, sigma))

    def _mixture_score(self, x: Tensor, sigma: Tensor, scale: Optional[Tensor] = None
                       ) -> Tensor:
        """grad log p at x = s u: sum_k r_k (mu_k / (s var_k) - x / (s^2 var_k)), i.e.
        (sum_k r_k mu_k / (s var_k)) - x (sum_k r_k / (s^2 var_k)); s = 1 if None."""
        log_joint, inv, mu_inv = self._posterior(x, sigma, scale)
        resp = torch.softmax(log_joint, dim=1)
        return torch.addcmul(torch.einsum("...k,...kd->...d", resp, mu_inv), x,
                             torch.einsum("...k,...kd->...d", resp, inv), value=-1)

    def _score(self, x: Tensor, t: Tensor) -> Tensor:
        # Computed directly rather than from D: no cancellation in (sD - x) / sigma^2.
        # s enters the (K, D) constants only: no pass over the state to divide by it.
        t = _levels(t, x)
        scale = None if self.sde.unit_scale else self.sde.scale(t)
        return self._mixture_score(x, self.sde.sigma(t), scale)

    # --- exact density and samples (not network evaluations: not counted) ----------
    def log_prob(self, x: Tensor, t: Time) -> Tensor:
        """Exact log p_t(x) in nats, one value per row of x (x in the SDE's scaled variable)."""
        t = _levels(t, x)
        s = self.sde.scale(t)
        log_joint, _, _ = self._posterior(x / s[:, None], self.sde.sigma(t))
        return torch.logsumexp(log_joint, dim=1) - x.shape[1] * torch.log(s)

    def sample(self, n: int, t: Time = 0.0, generator: Optional[torch.Generator] = None
               ) -> Tensor:
        """n exact samples of p_t (t = 0: the clean mixture; its VE version has sigma_min)."""
        device, dtype = self.means.device, self.means.dtype
        t = _levels(t, self.means)
        s, sigma = self.sde.scale(t)[:, None], self.sde.sigma(t)[:, None]
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=dtype,
                            device=device)
        std = (self.variances[which] + sigma**2).sqrt()
        return s * (self.means[which] + std * noise)

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n samples of the noise-free mixture (what an ideal sampler returns at sigma = 0)."""
        return self._sample_clean(n, generator)[0]

    def _sample_clean(self, n: int, generator: Optional[torch.Generator] = None
                      ) -> tuple[Tensor, Tensor]:
        """n samples of the noise-free mixture and the component each came from."""
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator,
                            dtype=self.means.dtype, device=self.means.device)
        return self.means[which] + self.variances[which].sqrt() * noise, which

    # --- reference data: exact samples --------------------------------------------------
    reference_splits = ("train", "test")
    reference_is_exact = True
    #: Exact samples given when the caller does not say how many.
    REFERENCE_SAMPLES = 10_000

    def _reference_data(self, split: str, num: Optional[int], seed: int) -> ReferenceData:
        """`num` exact samples of the noise-free mixture from a generator seeded by
        (seed, split), so that "train" and "test" never share samples."""
        num = self.REFERENCE_SAMPLES if num is None else num
        split_seed = int(hashlib.sha256(f"{seed}:{split}".encode()).hexdigest()[:15], 16)
        gen = torch.Generator(device=self.means.device).manual_seed(split_seed)
        data, which = self._sample_clean(num, generator=gen)
        return ReferenceData(f"gmm:{self.digest()[:16]}:{split}:n={num}:seed={seed}",
                             data.cpu(),
                             f"{num} exact samples of the noise-free mixture ({split})",
                             exact=True, labels=self._reference_labels(which))

    def _reference_labels(self, which: Tensor) -> Optional[Tensor]:
        """The labels reference data carry: none for the unconditional mixture."""
        return None

    def digest(self) -> str:
        """sha256 of the mixture's parameters (weights, means, variances, as float64)."""
        digest = hashlib.sha256()
        for tensor in (self.weights, self.means, self.variances):
            digest.update(tensor.detach().cpu().double().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact mean (D,) and covariance (D, D) of the noise-free mixture."""
        w = self.weights[:, None]
        mean = (w * self.means).sum(0)
        centred = self.means - mean
        cov = torch.diag((w * self.variances).sum(0))
        cov = cov + (w * centred).T @ centred
        return mean, cov


class ConditionalGaussianMixture(GaussianMixture):
    """A Gaussian mixture read as a class-conditional model: class c is component c.

    `denoise_labelled(x, sigma, labels)` is exact for each row's class (one Gaussian);
    rows labelled `NULL_LABEL` and the plain `denoise`/`score` get the whole mixture, so
    every unconditional use (its fast paths included) is that of `GaussianMixture`.
    Reference data carry each sample's component as its label; `classifier` is the
    exact Bayes classifier of the clean data. Same arguments as `GaussianMixture`.
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike, stds: ArrayLike, sde: SDE,
                 dtype: torch.dtype = torch.float64):
        super().__init__(weights, means, stds, sde, dtype=dtype)
        self.num_classes = int(self.means.shape[0])

    def _denoise_labelled(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        # Class c alone: D = mu_c + v_c / (v_c + sigma^2) (x - mu_c) (Tweedie, diagonal).
        # Both answers are computed for every row and the null rows pick the mixture's:
        # selecting rows by value, or checking the labels' values, would read them on the
        # host (a GPU sync per call). They come from `harness.core.labels`; a class >= K
        # still fails at the indexing below.
        sigma = _levels(sigma, x)
        unconditional = self._denoise(x, sigma)
        null = labels == NULL_LABEL
        which = labels.clamp(min=0)
        mean, var = self.means[which], self.variances[which]
        shrink = var / (var + _expand(sigma, x) ** 2)
        conditional = torch.addcmul(mean, shrink, x - mean)
        return torch.where(null[:, None], unconditional, conditional)

    def _reference_labels(self, which: Tensor) -> Optional[Tensor]:
        return which.to(device="cpu", dtype=torch.int64)

    def classifier(self, device: Any = "cpu") -> nn.Module:
        """The exact Bayes classifier of the clean data (t = 0): logits
        log w_c + log N(x; mu_c, diag v_c), so softmax gives p(c | x) exactly."""
        return BayesClassifier(self.weights, self.means, self.variances).to(device)


class BayesClassifier(nn.Module):
    """Logits log w_c + log N(x; mu_c, diag v_c) of a Gaussian mixture, (B, K), in the
    mixture's dtype. `sha256` names its parameters (w, mu, v, as float64)."""

    name = "exact Bayes classifier of the Gaussian mixture (t = 0)"

    def __init__(self, weights: Tensor, means: Tensor, variances: Tensor):
        super().__init__()
        self.register_buffer("log_weights", weights.log().clone())
        self.register_buffer("means", means.clone())
        self.register_buffer("variances", variances.clone())
        digest = hashlib.sha256(b"bayes-classifier:")
        for tensor in (weights, means, variances):
            digest.update(tensor.detach().cpu().double().contiguous().numpy().tobytes())
        self.sha256 = digest.hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1).to(self.means.dtype)
        diff = x[:, None, :] - self.means                                     # (B, K, D)
        log_normal = -0.5 * ((diff * diff / self.variances).sum(-1)
                             + torch.log(self.variances).sum(-1)
                             + x.shape[1] * _LOG_2PI)
        return self.log_weights + log_normal


def _levels(t: Time, like: Tensor) -> Tensor:
    """t (or sigma) as a (1,) tensor when one value serves the whole batch, else (B,).

    Told apart by type and strides alone (a number, a 0-d tensor, or one expanded to
    (B,)): comparing the values would read them on the host, a GPU sync per call.
    """
    if not isinstance(t, Tensor):
        return torch.full((1,), float(t), dtype=like.dtype, device=like.device)
    one = t.ndim == 0 or t.stride(0) == 0
    return (t.reshape(-1)[:1] if one else t).to(dtype=like.dtype, device=like.device)


def ring_2d(sde: SDE, radius: float = 1.0, std: float = 0.1, components: int = 8,
            dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The classic 2-D benchmark: `components` equal Gaussians evenly spaced on a circle."""
    angles = torch.arange(components, dtype=dtype) * (2 * math.pi / components)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(torch.ones(components), means, torch.full((components,), std),
                           sde, dtype=dtype)


def mixture_64d(sde: SDE, components: int = 8, dim: int = 64, seed: int = 0,
                dtype: torch.dtype = torch.float64, conditional: bool = False
                ) -> GaussianMixture:
    """A fixed 64-D mixture: unequal weights, spread means, diagonal stds in [0.2, 0.6].
    `conditional`: the same mixture as a `ConditionalGaussianMixture` (class = component).
    """
    gen = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(components, generator=gen, dtype=dtype)
    means = torch.randn(components, dim, generator=gen, dtype=dtype) * 0.7
    stds = 0.2 + 0.4 * torch.rand(components, dim, generator=gen, dtype=dtype)
    cls = ConditionalGaussianMixture if conditional else GaussianMixture
    return cls(weights, means, stds, sde, dtype=dtype)


def conditional_64d(sde: SDE, dtype: torch.dtype = torch.float64
                    ) -> ConditionalGaussianMixture:
    """`mixture_64d` as a class-conditional model: 8 classes, 64-D."""
    return mixture_64d(sde, dtype=dtype, conditional=True)


def overlapping_2d(sde: SDE, components: int = 3, radius: float = 0.5, std: float = 0.35,
                   dtype: torch.dtype = torch.float64) -> ConditionalGaussianMixture:
    """A class-conditional 2-D mixture whose classes overlap: `components` equal
    Gaussians evenly spaced on a circle of `radius`, each of std `std` (default: 3 at
    radius 0.5, std 0.35, so neighbouring classes share much of their mass). Guidance
    with w > 1 pushes each class's samples away from the others (where p(c | x) is high),
    which is visible here, whereas on the well separated ring it would change little."""
    angles = math.pi / 2 + torch.arange(components, dtype=dtype) * (2 * math.pi / components)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return ConditionalGaussianMixture(torch.ones(components), means,
                                      torch.full((components,), std), sde, dtype=dtype)
