"""Gaussian mixtures: score models whose score, denoiser and log-density are exact.

Under Gaussian noising a mixture stays a mixture: component k with mean mu_k and
diagonal variance v_k becomes, in the unscaled variable x = x_t / s(t), a Gaussian
with mean mu_k and variance v_k + sigma(t)^2. Hence, for every t and every SDE,

    log p_t(x_t) = logsumexp_k [log w_k + log N(x_t / s; mu_k, v_k + sigma^2)] - D log s,
    D(x; sigma)  = sum_k r_k(x) [mu_k + v_k / (v_k + sigma^2) (x - mu_k)]   (Tweedie),

with r_k the posterior responsibilities. This is the ground truth every sampler and
metric in the harness is tested against.
"""

from __future__ import annotations

import hashlib
import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..core.model import DataSpec, ReferenceData, ScoreModel
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
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator,
                            dtype=self.means.dtype, device=self.means.device)
        return self.means[which] + self.variances[which].sqrt() * noise

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
        data = self.sample_clean(num, generator=gen).cpu()
        digest = hashlib.sha256()
        for tensor in (self.weights, self.means, self.variances):
            digest.update(tensor.detach().cpu().double().contiguous().numpy().tobytes())
        return ReferenceData(f"gmm:{digest.hexdigest()[:16]}:{split}:n={num}:seed={seed}",
                             data, f"{num} exact samples of the noise-free mixture ({split})",
                             exact=True)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact mean (D,) and covariance (D, D) of the noise-free mixture."""
        w = self.weights[:, None]
        mean = (w * self.means).sum(0)
        centred = self.means - mean
        cov = torch.diag((w * self.variances).sum(0))
        cov = cov + (w * centred).T @ centred
        return mean, cov


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
                dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """A fixed 64-D mixture: unequal weights, spread means, diagonal stds in [0.2, 0.6]."""
    gen = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(components, generator=gen, dtype=dtype)
    means = torch.randn(components, dim, generator=gen, dtype=dtype) * 0.7
    stds = 0.2 + 0.4 * torch.rand(components, dim, generator=gen, dtype=dtype)
    return GaussianMixture(weights, means, stds, sde, dtype=dtype)
