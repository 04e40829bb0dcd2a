"""Euler-Maruyama on the family of reverse SDEs that share the PF-ODE's marginals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import Capabilities, Params, Sampler, hookimpl, param

harness_api_version = 1


@dataclass(frozen=True)
class LambdaParams(Params):
    lam: float = param(0.5, ge=0.0, doc="extra noise level: 0 is the PF-ODE, 1 the "
                                        "reverse SDE")


def lambda_sde(model, x, grid, noise, callback, params):
    """Euler-Maruyama on dx = [f - (1 + lam^2)/2 g^2 score] dt + lam g dw.

    Every lam >= 0 gives the same marginals p_t (Song et al. 2021, App. D.1; Karras et
    al. 2022, Eq. 6): lam interpolates between the probability-flow ODE and the reverse
    SDE. The last step returns the transition mean.
    """
    sde, t, lam = model.sde, grid.t, params.lam
    for i in range(grid.steps):
        dt = t[i + 1] - t[i]
        x = x + sde.reverse_drift(x, t[i], model.score(x, t[i]), lam) * dt
        if i < grid.steps - 1 and lam > 0:
            x = x + lam * sde.diffusion(t[i]) * math.sqrt(-dt) * noise(x)
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="lambda_sde", fn=lambda_sde, params=LambdaParams,
        capabilities=Capabilities(stochastic=True, order=1, nfe_per_step=1),
        citation="Song et al. 2021 (App. D.1); Karras et al. 2022 (Eq. 6)"))
