"""Forward diffusion processes with closed-form Gaussian marginals.

Every process here is written in the form of Karras et al. (2022, Eq. 4):

    p_t(x | x_0) = N(x; s(t) x_0, s(t)^2 sigma(t)^2 I),

so one pair of scalar functions (s, sigma) determines the whole linear SDE

    dX = f(t) X dt + g(t) dW,   f = s'/s,   g^2 = 2 s^2 sigma sigma'.

The reverse-time family that shares the probability-flow ODE's marginals is derived
here once, for all processes, and every sampler uses it:

    dX = [f X - (1 + lam^2)/2 g^2 score] dt + lam g dW_bar

(lam = 0: the probability-flow ODE, lam = 1: the reverse SDE of Anderson 1982 / Song 2021).

Scalar functions accept a Python float (fast path used inside sampling loops: no
tensors, no device synchronisation) or a tensor (used by adaptive ODE solvers).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Union

import torch
from torch import Tensor

Time = Union[float, Tensor]


def _ops(t: Time):
    """`math` for Python scalars, `torch` for tensors: the same formula serves both."""
    return torch if isinstance(t, Tensor) else math


class SDE(ABC):
    """A forward diffusion dX = f(t) X dt + g(t) dW on t in [0, T] with Gaussian marginals."""

    name: str
    T: float
    #: Smallest positive time a sampling grid visits before its final step to t = 0;
    #: also the default start of likelihood integration (epsilon).
    t_min: float
    #: s(t) = 1 for every t (VE, EDM): callers skip multiplying and dividing by s, which
    #: would otherwise be full passes over the state on every network evaluation.
    unit_scale: bool = False

    # --- the two functions that define the process -------------------------------
    @abstractmethod
    def scale(self, t: Time) -> Time:
        """s(t): the marginal mean is s(t) x_0."""

    @abstractmethod
    def sigma(self, t: Time) -> Time:
        """sigma(t): the noise level in the unscaled variable x / s(t)."""

    @abstractmethod
    def t_of_sigma(self, sigma: Time) -> Time:
        """The inverse of sigma(t)."""

    @abstractmethod
    def scale_rate(self, t: Time) -> Time:
        """f(t) = s'(t) / s(t)."""

    @abstractmethod
    def sigma_derivative(self, t: Time) -> Time:
        """sigma'(t)."""

    def params(self) -> dict[str, float | str]:
        """Parameters that identify the process (logged with every trial)."""
        return {"sde": self.name, "T": self.T, "t_min": self.t_min}

    # --- derived once, for every process ------------------------------------------
    def diffusion_squared(self, t: Time) -> Time:
        """g(t)^2 = 2 s^2 sigma sigma'."""
        return 2 * self.scale(t) ** 2 * self.sigma(t) * self.sigma_derivative(t)

    def diffusion(self, t: Time) -> Time:
        """g(t)."""
        return _ops(t).sqrt(self.diffusion_squared(t))

    def drift(self, x: Tensor, t: Time) -> Tensor:
        """f(x, t) = f(t) x."""
        return _expand(self.scale_rate(t), x) * x

    def marginal_std(self, t: Time) -> Time:
        """Standard deviation of p_t(x | x_0): s(t) sigma(t)."""
        return self.scale(t) * self.sigma(t)

    def reverse_drift(self, x: Tensor, t: Time, score: Tensor, lam: float = 1.0) -> Tensor:
        """Drift of the reverse-time process with extra noise level `lam`.

        f x - (1 + lam^2)/2 g^2 score; its diffusion is lam g. Every member shares the
        marginals p_t of the forward process (Song et al. 2021, Eq. 13 and App. D.1).
        """
        weight = (1 + lam**2) / 2 * self.diffusion_squared(t)
        rate = 0.0 if self.unit_scale else self.scale_rate(t)    # f = s'/s = 0 when s = 1
        return _combine(rate, x, -weight, score)

    def ode_drift(self, x: Tensor, t: Time, score: Tensor) -> Tensor:
        """Probability-flow ODE drift f x - g^2/2 score (`reverse_drift` with lam = 0)."""
        return self.reverse_drift(x, t, score, lam=0.0)

    def transition(self, t_from: float, t_to: float) -> tuple[float, float]:
        """(a, b^2) with p(x_{t_to} | x_{t_from}) = N(a x_{t_from}, b^2 I), t_to >= t_from."""
        a = self.scale(t_to) / self.scale(t_from)
        b2 = self.scale(t_to) ** 2 * (self.sigma(t_to) ** 2 - self.sigma(t_from) ** 2)
        return a, b2

    # --- the prior at t = T -----------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Std of the prior N(0, prior_std^2 I): the marginal of a point mass at 0 at t = T."""
        return float(self.marginal_std(self.T))

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the prior, summed over all but the first (batch) dimension."""
        dim = x[0].numel()
        var = self.prior_std**2
        sq = x.flatten(1).pow(2).sum(1)
        return -0.5 * (sq / var + dim * math.log(2 * math.pi * var))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "sde")
        return f"{type(self).__name__}({args})"


def _expand(coef: Time, x: Tensor) -> Time:
    """Broadcast a per-sample coefficient of shape (B,) against x; scalars pass through."""
    if isinstance(coef, Tensor) and coef.ndim == 1:
        return coef.view(-1, *([1] * (x.ndim - 1)))
    return coef


def _combine(a: Time, x: Tensor, b: Time, y: Tensor) -> Tensor:
    """a x + b y for scalar or per-sample (B,) coefficients, in two passes over the state.

    A Python-scalar a == 0 drops the term: f = 0 on VE and EDM, and 0 * x would cost a
    pass over the state on every step for nothing. Otherwise b y is formed and a x added
    to it in place (a fused multiply-add: the same sum to float rounding).
    """
    by = _expand(b, y) * y
    if not isinstance(a, Tensor) and a == 0:
        return by
    if by.dtype != x.dtype or by.shape != x.shape:  # in place would lose precision/shape
        return _expand(a, x) * x + by
    return by.add_(x, alpha=a) if not isinstance(a, Tensor) else by.addcmul_(_expand(a, x), x)


class VPSDE(SDE):
    """Variance preserving (Song et al. 2021): beta(t) = beta_min + t (beta_max - beta_min)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0,
                 t_min: float = 1e-3):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.T, self.t_min = beta_min, beta_max, T, t_min

    def params(self):
        return {**super().params(), "beta_min": self.beta_min, "beta_max": self.beta_max}

    def _integral_beta(self, t: Time) -> Time:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _beta(self, t: Time) -> Time:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _t_of_integral(self, integral: Time) -> Time:
        d = self.beta_max - self.beta_min
        return (_ops(integral).sqrt(self.beta_min**2 + 2 * d * integral) - self.beta_min) / d

    def scale(self, t):
        return _ops(t).exp(-0.5 * self._integral_beta(t))

    def sigma(self, t):
        return _ops(t).sqrt(_ops(t).expm1(self._integral_beta(t)))

    def t_of_sigma(self, sigma):
        return self._t_of_integral(_ops(sigma).log1p(sigma**2))

    def scale_rate(self, t):
        return -0.5 * self._beta(t)

    def sigma_derivative(self, t):
        # sigma^2 = e^B - 1  =>  2 sigma sigma' = beta e^B
        ops = _ops(t)
        integral = self._integral_beta(t)
        return 0.5 * self._beta(t) * ops.exp(integral) / ops.sqrt(ops.expm1(integral))

    def diffusion_squared(self, t):
        return self._beta(t)  # closed form; avoids 0 * inf at t = 0


class SubVPSDE(VPSDE):
    """Sub-VP (Song et al. 2021): same mean as VP, marginal std 1 - alpha^2."""

    name = "subvp"

    def sigma(self, t):
        alpha2 = _ops(t).exp(-self._integral_beta(t))
        return (1 - alpha2) / _ops(t).sqrt(alpha2)

    def t_of_sigma(self, sigma):
        # sigma = 1/alpha - alpha  =>  alpha = (sqrt(sigma^2 + 4) - sigma) / 2
        alpha = (_ops(sigma).sqrt(sigma**2 + 4) - sigma) / 2
        return self._t_of_integral(-2 * _ops(sigma).log(alpha))

    def sigma_derivative(self, t):
        # sigma = e^{B/2} - e^{-B/2}  =>  sigma' = beta/2 (e^{B/2} + e^{-B/2})
        half = 0.5 * self._integral_beta(t)
        ops = _ops(t)
        return 0.5 * self._beta(t) * (ops.exp(half) + ops.exp(-half))

    def diffusion_squared(self, t):
        return self._beta(t) * (1 - _ops(t).exp(-2 * self._integral_beta(t)))


class VESDE(SDE):
    """Variance exploding (Song et al. 2021): sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    As in the reference, sigma(0) = sigma_min: the process at t = 0 is the data
    convolved with N(0, sigma_min^2), and every marginal above is exact for it.
    """

    name = "ve"
    unit_scale = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0,
                 t_min: float = 1e-5):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.T, self.t_min = sigma_min, sigma_max, T, t_min
        self._log_ratio = math.log(sigma_max / sigma_min)

    def params(self):
        return {**super().params(), "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def scale(self, t):
        return t * 0 + 1.0

    def sigma(self, t):
        return self.sigma_min * _ops(t).exp(t * self._log_ratio)

    def t_of_sigma(self, sigma):
        return _ops(sigma).log(sigma / self.sigma_min) / self._log_ratio

    def scale_rate(self, t):
        return t * 0.0

    def sigma_derivative(self, t):
        return self.sigma(t) * self._log_ratio


class EDMSDE(SDE):
    """Karras et al. (2022): s(t) = 1, sigma(t) = t, on t in [0, sigma_max]."""

    name = "edm"
    unit_scale = True

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.T, self.t_min = sigma_max, sigma_min

    def params(self):
        return {**super().params(), "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def scale(self, t):
        return t * 0 + 1.0

    def sigma(self, t):
        return t

    def t_of_sigma(self, sigma):
        return sigma

    def scale_rate(self, t):
        return t * 0.0

    def sigma_derivative(self, t):
        return t * 0 + 1.0


SDES: dict[str, type[SDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "edm": EDMSDE}


def make_sde(name: str, **kwargs) -> SDE:
    """Build a process by name ("vp", "subvp", "ve", "edm")."""
    from ..errors import unknown_name

    if name not in SDES:
        raise unknown_name("SDE", name, SDES)
    return SDES[name](**kwargs)
