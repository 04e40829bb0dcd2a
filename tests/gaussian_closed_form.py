"""Closed forms for sampler tests: the four processes and Gaussian data, from the papers.

Written from Song et al. (2021, Sec. 3.4 and App. B) and Karras et al. (2022, Eq. 4 and
Table 1) without the harness's own SDE helpers, so that a test comparing a sampler with
these formulas checks the sampler's arithmetic against an independent statement of it.

For data N(mu, s0^2 I), the perturbation kernel N(alpha(t) x_0, v(t) I) of every linear
SDE gives the marginal p_t = N(alpha mu, (alpha^2 s0^2 + v) I), whose score is linear:

    grad log p_t(x) = -(x - alpha mu) / (alpha^2 s0^2 + v).

`ScriptedNoise` hands a sampler known standard-normal draws, so a stochastic update is
checked exactly.
"""

from __future__ import annotations

import math

import torch

from harness.models.oracle import GaussianMixture

BETA_MIN, BETA_MAX = 0.1, 20.0            # VP and sub-VP defaults (Song et al. 2021)
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.01, 50.0   # VE defaults (Song et al. 2021)

MU = (0.7, -1.3, 0.2)
S0 = 0.5


def gaussian_data(sde, dtype=torch.float64):
    """The model under test: exact scores of N(MU, S0^2 I) noised by `sde`."""
    return GaussianMixture([1.0], [list(MU)], [S0], sde, dtype=dtype)


def mu(dtype=torch.float64):
    return torch.tensor(MU, dtype=dtype)


# --- the processes (Song et al. 2021, Eqs. 25-34; Karras et al. 2022, Table 1) -------
def beta(t):
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def integral_beta(t):
    return BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2


def alpha(name, t):
    """Mean coefficient of the perturbation kernel: x_t = alpha x_0 + noise."""
    return math.exp(-0.5 * integral_beta(t)) if name in ("vp", "subvp") else 1.0


def kernel_variance(name, t):
    """Variance v(t) of the perturbation kernel p(x_t | x_0) (per dimension)."""
    if name == "vp":
        return 1 - math.exp(-integral_beta(t))
    if name == "subvp":
        return (1 - math.exp(-integral_beta(t))) ** 2
    if name == "ve":
        # The harness keeps sigma(0) = sigma_min: the kernel variance is sigma(t)^2.
        return ve_sigma(t) ** 2
    return t**2                                                   # edm: sigma(t) = t


def ve_sigma(t):
    return VE_SIGMA_MIN * (VE_SIGMA_MAX / VE_SIGMA_MIN) ** t


def drift_coefficient(name, t):
    """f(t) in dx = f(t) x dt + g(t) dw."""
    return -0.5 * beta(t) if name in ("vp", "subvp") else 0.0


def g2(name, t):
    """g(t)^2 in dx = f(t) x dt + g(t) dw."""
    if name == "vp":
        return beta(t)
    if name == "subvp":
        return beta(t) * (1 - math.exp(-2 * integral_beta(t)))
    if name == "ve":
        return 2 * ve_sigma(t) ** 2 * math.log(VE_SIGMA_MAX / VE_SIGMA_MIN)
    return 2 * t                                                  # edm: d(t^2)/dt


def score(name, x, t):
    """Exact score of the noised Gaussian data at time t."""
    a = alpha(name, t)
    return -(x - a * mu(x.dtype)) / (a**2 * S0**2 + kernel_variance(name, t))


def pf_ode_drift(name, x, t):
    """Probability-flow ODE: dx/dt = f x - g^2/2 score (Song et al. 2021, Eq. 13)."""
    return drift_coefficient(name, t) * x - 0.5 * g2(name, t) * score(name, x, t)


def edm_denoiser(x, sigma):
    """D(x; sigma) = E[x_0 | x] for Gaussian data under EDM: shrink towards the mean."""
    return mu(x.dtype) + S0**2 / (S0**2 + sigma**2) * (x - mu(x.dtype))


def vp_t_of_sigma(sigma):
    """VP: sigma(t)^2 = exp(int beta) - 1 (Karras et al. 2022, Table 1), inverted."""
    target = math.log1p(sigma**2)
    d = BETA_MAX - BETA_MIN
    return (math.sqrt(BETA_MIN**2 + 2 * d * target) - BETA_MIN) / d


def vp_sigma(t):
    return math.sqrt(math.expm1(integral_beta(t)))


# --- known noise -------------------------------------------------------------------
class ScriptedNoise:
    """`noise(x)` returning pre-drawn standard-normal tensors, one per call, in order."""

    def __init__(self, shape, count, seed=0, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)
        self.draws = [torch.randn(*shape, generator=gen, dtype=dtype) for _ in range(count)]
        self.calls = 0

    def __call__(self, x):
        assert x.shape == self.draws[0].shape, "noise asked for another shape"
        z = self.draws[self.calls]
        self.calls += 1
        return z


def start(batch=4, seed=1, dtype=torch.float64):
    """A fixed initial state of shape (batch, 3), spread around the data."""
    gen = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(batch, len(MU), generator=gen, dtype=dtype)


# --- grids -------------------------------------------------------------------------
#: Three steps ending at t = 0, inside each process's time range.
TIMES = {"vp": (1.0, 0.55, 0.2, 0.0), "subvp": (1.0, 0.55, 0.2, 0.0),
         "ve": (1.0, 0.6, 0.25, 0.0), "edm": (5.0, 1.5, 0.4, 0.0)}


def grid(sde, times=None):
    """A `TimeGrid` on explicit times (the default: `TIMES[sde.name]`)."""
    from harness.core.schedules import TimeGrid

    return TimeGrid.from_times(sde, TIMES[sde.name] if times is None else times)


class Recorder:
    """A sampler callback that keeps every dict it is given."""

    def __init__(self):
        self.calls = []

    def __call__(self, info):
        self.calls.append(dict(info))
