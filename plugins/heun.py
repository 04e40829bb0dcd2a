"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1)."""

from __future__ import annotations

from harness import Capabilities, Sampler, hookimpl

harness_api_version = 1


def heun_step(model, x, t_cur, t_next, sigma_next):
    """One step of Alg. 1 from t_cur to t_next; Euler only when it lands on sigma = 0."""
    d_cur = model.ode_drift(x, t_cur)                          # evaluate dx/dt at t_cur
    x_next = x + (t_next - t_cur) * d_cur                      # Euler step
    if sigma_next != 0:
        d_prime = model.ode_drift(x_next, t_next)              # apply 2nd-order correction
        x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def heun(model, x, grid, noise, callback, params):
    """Heun's 2nd-order method on the PF-ODE, last step Euler (Karras et al. 2022, Alg. 1).

    In the general form of Alg. 1 (any s(t), sigma(t)); N steps cost 2N - 1 evaluations
    when the grid ends at sigma = 0.
    """
    t, sigma = grid.t, grid.sigma
    for i in range(grid.steps):
        x = heun_step(model, x, t[i], t[i + 1], sigma[i + 1])
        if callback is not None:
            callback({"i": i, "t": t[i + 1], "x": x})
    return x


@hookimpl
def harness_register_samplers(register):
    register(Sampler(
        name="heun", fn=heun,
        capabilities=Capabilities(stochastic=False, order=2, nfe_per_step=2,
                                  final_step_nfe=1, pf_ode=True),
        citation="Karras et al. 2022, Elucidating the Design Space of Diffusion-Based "
                 "Generative Models, Algorithm 1"))
