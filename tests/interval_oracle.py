"""Feature sets drawn from known distributions, and the distances between them exactly.

The "real" distribution P is the 64-D oracle mixture (`harness.models.oracle.mixture_64d`);
a "generated" distribution Q_a is the same mixture with its component means moved away
from the mixture mean by a factor 1 + a (a = 0: Q_0 = P). Every Q_a has P's mean, and a
covariance that grows with a, so the population FID grows from 0 smoothly. Draws for
several a are paired as a sampler's samples are: draw i of every Q_a uses the same
component and the same standard normal vector (the same "initial noise").

The population values are computed here, independently of the harness's own code: the
FID between the exact moments by scipy's matrix square root, and KID's population value,
the squared MMD of the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, in closed
form from Gaussian moments: for x ~ N(a, A), y ~ N(b, B) independent, s = x.y has

    E s   = a.b,
    E s^2 = tr(A B) + b'A b + a'B a + (a.b)^2,
    E s^3 = (a.b)^3 + 3 (a.b) b'A b + 3 [(a.b)(a'B a + tr(A B)) + 2 a'B A b],

and a mixture's expectation is the weighted sum over pairs of components.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d


class ShiftedMixture:
    """P, the 64-D oracle mixture, and its spread-out versions Q_a (see above)."""

    def __init__(self) -> None:
        oracle = mixture_64d(make_sde("vp"))
        self.weights = oracle.weights.double()
        self.means = oracle.means.double()
        self.variances = oracle.variances.double()
        self.centre = (self.weights[:, None] * self.means).sum(0)
        self.dim = self.means.shape[1]

    def component_means(self, a: float) -> Tensor:
        return self.centre + (1 + a) * (self.means - self.centre)

    def draw(self, n: int, spreads: list[float], generator: torch.Generator
             ) -> list[Tensor]:
        """n samples of each Q_a, a in `spreads`, paired index by index."""
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        spread = self.variances[which].sqrt() * noise
        return [self.component_means(a)[which] + spread for a in spreads]

    def moments(self, a: float) -> tuple[np.ndarray, np.ndarray]:
        w, mu = self.weights.numpy(), self.component_means(a).numpy()
        mean = w @ mu
        centred = mu - mean
        cov = np.diag(w @ self.variances.numpy()) + (w[:, None] * centred).T @ centred
        return mean, cov

    def population_fid(self, a: float, b: float = 0.0) -> float:
        """FID between the exact moments of Q_a and Q_b."""
        (m1, c1), (m2, c2) = self.moments(a), self.moments(b)
        root = linalg.sqrtm(c1 @ c2).real
        return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))

    def _kernel_mean(self, a: float, b: float) -> float:
        """E k(x, y) for x ~ Q_a, y ~ Q_b independent (closed form above)."""
        d = self.dim
        mu_a, mu_b = self.component_means(a).numpy(), self.component_means(b).numpy()
        var, w = self.variances.numpy(), self.weights.numpy()
        ab = mu_a @ mu_b.T                                  # (K, K): a.b
        bAb = (mu_b**2) @ var.T                             # [l, k]: b_l' A_k b_l
        aBa = (mu_a**2) @ var.T                             # [k, l]: a_k' B_l a_k
        trAB = var @ var.T                                  # [k, l]
        aBAb = np.einsum("kd,ld,kd,ld->kl", mu_a, mu_b, var, var)
        s1 = ab
        s2 = trAB + bAb.T + aBa + ab**2
        s3 = ab**3 + 3 * ab * bAb.T + 3 * (ab * (aBa + trAB) + 2 * aBAb)
        kernel = s3 / d**3 + 3 * s2 / d**2 + 3 * s1 / d + 1
        return float(w @ kernel @ w)

    def population_mmd2(self, a: float, b: float = 0.0) -> float:
        """KID's population value between Q_a and Q_b: the kernel's squared MMD."""
        return (self._kernel_mean(a, a) + self._kernel_mean(b, b)
                - 2 * self._kernel_mean(a, b))

    def spread_for_fid(self, target: float) -> float:
        """The a >= 0 whose population FID against P is `target` (bisection)."""
        low, high = 0.0, 4.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if self.population_fid(middle) < target else (
                low, middle)
        return (low + high) / 2
