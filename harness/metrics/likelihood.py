"""Negative log-likelihood by the instantaneous change of variables on the PF-ODE.

Along the probability-flow ODE dx/dt = v(x, t) the log-density obeys
d log p_t(x_t) / dt = -div v(x_t, t) (Chen et al. 2018; Grathwohl et al. 2019, FFJORD), so

    log p_eps(x) = log p_T(x_T) + Delta,   Delta = int_eps^T div v(x_t, t) dt,

with x_t the solution started at x_eps = x (Song et al. 2021, App. D.2). p_T is replaced
by the SDE's Gaussian prior. Two divergences are offered:

* ``"hutchinson"``: div v = E[e^T (dv/dx) e] for probes with E[e e^T] = I (Hutchinson
  1989). Each probe costs one vector-Jacobian product (never a full Jacobian). Probes are
  Rademacher or Gaussian, drawn once per solve from each sample's own seeded stream and
  held fixed, so the right-hand side is a deterministic function and adaptive step
  control works (FFJORD, Sec. 3.1).
* ``"exact"``: the trace as D vector-Jacobian products with the unit vectors; fine for
  D <= 64 (oracles, 8x8 digits), an unbiased reference for the estimator above.

Several probes share one trajectory: the state is [x, Delta_1, ..., Delta_K], the network
is evaluated once per right-hand side and differentiated K times through the same graph
(K VJPs, one forward). The K integrals are K independent estimates of Delta for the same
x, which is what lets the result carry a Monte-Carlo standard error next to the spread
over test points. Stacking probes into the batch instead would repeat the identical
forward pass K times for nothing.

Quantised data are dequantised with uniform noise u over each bin (width w from
`DataSpec.bin_width`): in expectation over u, -log p(x + u) - D log w bounds the discrete
NLL -log P(x) from above (Theis et al. 2016), so bits/dim of quantised data is
(nats / D - log w) / log 2, the offset derived from the levels and the value
range (log2 127.5 for 256 levels on [-1, 1], not the "+7" of data scaled by 128).
Continuous data (levels None) are not dequantised: bits/dim = nats / (D log 2).
The data point is used as the state at t = eps as it is: no correction for the gap
between p_eps and p_0 is added.

The density of a sampler's own output (its discrete map, not this continuous flow) is
in `harness.metrics.discrete_kl`: integrating the divergence with the sampler's own step
is not the log-determinant of that step, and gives no normalised density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ParameterError
from ..core.counting import CountedModel
from ..core.model import DataSpec, ScoreModel
from ..core.noise import SampleNoise
from ..core.sde import Time

Method = Literal["hutchinson", "exact"]
Probe = Literal["rademacher", "gaussian"]
METHODS: tuple[str, ...] = ("hutchinson", "exact")
PROBES: tuple[str, ...] = ("rademacher", "gaussian")
DEQUANTISATION = "uniform noise over each quantisation bin, per-sample seeded"


@dataclass(frozen=True)
class NLLResult:
    """NLL of test points, with its conventions. All values are means over test points.

    `values` holds the per-(point, probe) estimates of -log p_eps(x) in nats, shape (N, K)
    (K = 1 for the exact trace). `stderr` is the standard error of the mean over test
    points x probes: the spread of the per-point probe means over the N points, / sqrt N
    (data and estimator noise together). `probe_stderr` is the Monte-Carlo error of the
    Hutchinson estimator alone for these fixed points (None when it cannot be estimated:
    one probe; 0 for the exact trace).
    """

    nats: float
    stderr: float
    probe_stderr: Optional[float]
    dim: int
    num_points: int
    num_probes: int
    method: str
    probe: Optional[str]
    eps: float
    solver: str
    rtol: Optional[float]
    atol: Optional[float]
    nfe_mean: float
    nfe_max: float
    bin_width: Optional[float]
    seed: int
    values: Tensor = field(repr=False)

    # --- derived units -------------------------------------------------------------
    @property
    def nats_per_dim(self) -> float:
        return self.nats / self.dim

    @property
    def nats_per_dim_stderr(self) -> float:
        return self.stderr / self.dim

    @property
    def offset_bits_per_dim(self) -> float:
        """-log2(bin width): what dequantisation adds per dimension (0 when continuous)."""
        return 0.0 if self.bin_width is None else -math.log2(self.bin_width)

    @property
    def bits_per_dim(self) -> float:
        return to_bits_per_dim(self.nats, self.dim, self.bin_width)

    @property
    def bits_per_dim_stderr(self) -> float:
        return self.stderr / (self.dim * math.log(2))

    @property
    def data_stderr(self) -> Optional[float]:
        """The part of `stderr` due to which test points were drawn, in nats: the total
        less the probes' Monte-Carlo part, sqrt(stderr^2 - probe_stderr^2) (independent
        sources add in variance); None when the probe error is unknown (one probe)."""
        if self.probe_stderr is None:
            return None
        return math.sqrt(max(self.stderr**2 - self.probe_stderr**2, 0.0))

    @property
    def dequantisation(self) -> str:
        return "none (continuous data)" if self.bin_width is None else DEQUANTISATION

    def params(self) -> dict[str, Any]:
        """Units and conventions, flat, for logging next to the values."""
        return {
            "nll_units": "nats = -log p_eps(x) per test point; bits/dim as below",
            "nll_bits_per_dim_formula": ("(nats / D - log(bin_width)) / log 2"
                                         if self.bin_width is not None
                                         else "nats / (D log 2)"),
            "nll_method": self.method, "nll_probe": self.probe,
            "nll_num_probes": self.num_probes, "nll_num_points": self.num_points,
            "nll_dim": self.dim, "nll_eps": self.eps, "nll_eps_correction": "none",
            "nll_solver": self.solver, "nll_rtol": self.rtol, "nll_atol": self.atol,
            "nll_dequantisation": self.dequantisation, "nll_bin_width": self.bin_width,
            "nll_offset_bits_per_dim": self.offset_bits_per_dim,
            "nll_stderr": "over test points x probes (std of per-point means / sqrt N)",
            "nll_seed": self.seed,
            "nll_nfe": "network evaluations per sample (mean; max over batches)",
        }


def to_bits_per_dim(nats: float | Tensor, dim: int, bin_width: Optional[float]
                    ) -> float | Tensor:
    """Bits/dim of a density's NLL in nats: with dequantisation offset -log(bin_width).

    For data on L equally spaced levels with bin width w, uniformly dequantised, the
    discrete NLL is at most -log p(x + u) - D log w, hence (nats / D - log w) / log 2.
    Continuous data (bin_width None) have no offset.
    """
    offset = 0.0 if bin_width is None else -math.log(bin_width)
    return (nats / dim + offset) / math.log(2)


# --- the augmented right-hand side ------------------------------------------------------

class AugmentedDrift:
    """[x, Delta_1..Delta_M] -> [v(x, t), div_1 v, ..., div_M v], packed as (B, D + M).

    A torchdiffeq right-hand side (`__call__(t, y)`). With `probes` (K, B, *data.shape),
    column k is the Hutchinson estimate e_k^T (dv/dx) e_k for the fixed probe e_k; with
    `probes=None` there is one column, the exact trace from D VJPs with the unit vectors.
    The network is called once per evaluation, through the model's counted interface,
    and nothing in an evaluation leaves the device (no .item(), .cpu() or numpy).
    """

    def __init__(self, model: ScoreModel, probes: Optional[Tensor]):
        self.model = model
        self.sde = model.sde
        self.shape = tuple(model.data.shape)
        self.dim = model.data.dim
        self.probes = probes
        self.columns = 1 if probes is None else probes.shape[0]

    def ode_drift(self, state: Tensor, t: Time) -> Tensor:
        x = state[:, :self.dim].reshape(-1, *self.shape)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = self.model.ode_drift(x, t)
            if self.probes is None:
                div = _quadratic_forms(v, x, _unit_vectors(x)).sum(1, keepdim=True)
            else:
                div = _quadratic_forms(v, x, self.probes)
        return torch.cat([v.detach().flatten(1), div.detach()], dim=1)

    def __call__(self, t: Tensor, state: Tensor) -> Tensor:
        return self.ode_drift(state, t)


def _quadratic_forms(v: Tensor, x: Tensor, vectors: Tensor) -> Tensor:
    """e_m^T (dv/dx) e_m per sample, (B, M): one VJP per vector, the forward graph shared."""
    forms = []
    last = vectors.shape[0] - 1
    for m, e in enumerate(vectors):
        (vjp,) = torch.autograd.grad(v, x, grad_outputs=e, retain_graph=m < last)
        forms.append((vjp * e).flatten(1).sum(1))
    return torch.stack(forms, dim=1)


def _unit_vectors(x: Tensor) -> Tensor:
    """The D unit vectors of x's sample space, each broadcast over the batch: (D, B, ...)."""
    batch, shape = x.shape[0], tuple(x.shape[1:])
    dim = math.prod(shape)
    eye = torch.eye(dim, device=x.device, dtype=x.dtype).reshape(dim, 1, *shape)
    return eye.expand(dim, batch, *shape)


def dequantise(x: Tensor, spec: DataSpec, seed: int = 0,
               indices: Optional[Sequence[int]] = None) -> Tensor:
    """x plus uniform noise over its quantisation bin: x + w u, u ~ U(-1/2, 1/2) per value.

    The noise is the first draw of each sample's stream (seed, index), mapped from
    N(0, 1) to U(-1/2, 1/2) by the normal CDF; exactly what `ode_nll` adds. Continuous
    data (levels None) are returned unchanged.
    """
    indices = range(x.shape[0]) if indices is None else indices
    noise = SampleNoise(seed, indices, spec.shape, device=x.device, dtype=x.dtype)
    return _dequantise(x, spec, noise)


def _dequantise(x: Tensor, spec: DataSpec, noise: SampleNoise) -> Tensor:
    uniform = torch.special.ndtr(noise()) - 0.5   # N(0,1) -> U(-1/2, 1/2) exactly
    return x if spec.bin_width is None else x + spec.bin_width * uniform


def _draws(model: ScoreModel, x: Tensor, indices: Sequence[int], seed: int,
           method: str, probe: str, num_probes: int, dequantise: bool = True
           ) -> tuple[Tensor, Optional[Tensor]]:
    """(dequantised x, probes or None): the per-sample stream's first draw dequantises,
    the next `num_probes` draws are the probes. A point's randomness depends only on
    (seed, index), so it is the same in any batch. With `dequantise` False the first
    draw is still taken (the probes stay the same) but x is left as it is."""
    noise = SampleNoise(seed, indices, model.data.shape, device=x.device, dtype=x.dtype)
    dequantised = _dequantise(x, model.data, noise)
    x = dequantised if dequantise else x
    if method == "exact":
        return x, None
    draws = torch.stack([noise() for _ in range(num_probes)])
    if probe == "rademacher":
        draws = torch.where(draws >= 0, 1.0, -1.0).to(x.dtype)
    return x, draws


def _check(method: str, probe: str, num_probes: int, eps: float, model: ScoreModel) -> None:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if probe not in PROBES:
        raise ParameterError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ParameterError(f"num_probes must be an integer >= 1, got {num_probes!r}")
    if not 0 < eps < model.sde.T:
        raise ParameterError(f"eps must lie in (0, T = {model.sde.T}), got {eps!r}")


def _batches(n: int, batch_size: Optional[int]) -> Iterator[slice]:
    size = n if batch_size is None else batch_size
    if size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size!r}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _finish(model: ScoreModel, state: Tensor, columns: int) -> Tensor:
    """-log p_eps(x) per (point, column) from the state at t = T: -(log p_T(x_T) + Delta)."""
    dim = model.data.dim
    x_end = state[:, :dim].reshape(-1, *model.data.shape)
    prior = model.sde.prior_log_prob(x_end)
    return -(prior[:, None] + state[:, dim:dim + columns])


def _solve_batches(model: ScoreModel, data: Tensor, integrate, *, method: str, probe: str,
                   num_probes: int, seed: int, indices: Optional[Sequence[int]],
                   batch_size: Optional[int], dtype: Optional[torch.dtype],
                   dequantise: bool = True) -> tuple[Tensor, float, float]:
    """Run `integrate(flow, y0) -> y_T` per batch; (values (N, M) on CPU, NFE mean, max)."""
    n = data.shape[0]
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise ParameterError(f"{len(indices)} indices for {n} test points")
    if tuple(data.shape[1:]) != tuple(model.data.shape):
        raise ParameterError(f"test points have shape {tuple(data.shape[1:])}, the model's "
                             f"data have shape {tuple(model.data.shape)}")
    dtype = dtype or model.dtype
    values, nfe_max, rows = [], 0.0, 0
    for part in _batches(n, batch_size):
        x = data[part].to(device=model.device, dtype=dtype)
        x, probes = _draws(model, x, indices[part], seed, method, probe, num_probes,
                           dequantise)
        counted = CountedModel(model)  # this batch's solve alone
        flow = AugmentedDrift(counted, probes)
        y0 = torch.cat([x.flatten(1), x.new_zeros(x.shape[0], flow.columns)], dim=1)
        with torch.no_grad():
            y_end = integrate(flow, y0)
        used = counted.nfe.rows
        rows += used
        nfe_max = max(nfe_max, used / x.shape[0])
        values.append(_finish(model, y_end, flow.columns).cpu())
    return torch.cat(values), rows / n, nfe_max


def _result(values: Tensor, *, model: ScoreModel, method: str, probe: str, eps: float,
            solver: str, rtol: Optional[float], atol: Optional[float], nfe: tuple[float, float],
            seed: int) -> NLLResult:
    values = values.double()
    n, k = values.shape
    point_means = values.mean(1)
    stderr = float(point_means.std() / math.sqrt(n)) if n > 1 else math.nan
    if method == "exact":
        probe_stderr: Optional[float] = 0.0
    elif k > 1:
        # Var of the K-probe mean for point i is var_k / K; the mean over N points adds them.
        probe_stderr = float((values.var(1) / k).sum().sqrt() / n)
    else:
        probe_stderr = None
    return NLLResult(
        nats=float(values.mean()), stderr=stderr, probe_stderr=probe_stderr,
        dim=model.data.dim, num_points=n, num_probes=k if method == "hutchinson" else 1,
        method=method, probe=probe if method == "hutchinson" else None, eps=eps,
        solver=solver, rtol=rtol, atol=atol, nfe_mean=nfe[0], nfe_max=nfe[1],
        bin_width=model.data.bin_width, seed=seed, values=values)


# --- public entry points ------------------------------------------------------------------

def ode_nll(model: ScoreModel, data: Tensor, *, method: Method = "hutchinson",
            probe: Probe = "rademacher", num_probes: int = 1, eps: Optional[float] = None,
            solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
            options: Optional[dict[str, Any]] = None, seed: int = 0,
            indices: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
            dtype: Optional[torch.dtype] = None, dequantise: bool = True) -> NLLResult:
    """-log p_eps(x) of test points `data` (N, *data.shape) by the PF-ODE and torchdiffeq.

    Integrates [x, Delta] from t = eps (default `sde.t_min`) to T with `odeint(...,
    method=solver, rtol, atol, options)` (dopri5, 1e-5 by default, Song et al. 2021 App.
    D.2), in batches of `batch_size` on the model's device. Test point i draws its
    dequantisation noise and probes from stream (seed, indices[i]). NFE per sample is
    what the solver used, counted at the model (mean over points; max over batches).

    The solver controls its steps on the whole batch (torchdiffeq's RMS error norm over
    every state entry), so a point's value depends on its batch-mates at the level of
    the tolerance, never more.

    `dequantise=False` evaluates the density at the given points as they are, for points
    that are not quantised data (e.g. a sampler's states, `harness.metrics.discrete_kl`);
    the bits/dim of such a result still carries the data's offset and is not a data NLL.
    """
    eps = model.sde.t_min if eps is None else float(eps)
    _check(method, probe, num_probes, eps, model)
    from torchdiffeq import odeint

    def integrate(flow: AugmentedDrift, y0: Tensor) -> Tensor:
        times = torch.tensor([eps, model.sde.T], dtype=y0.dtype, device=y0.device)
        return odeint(flow, y0, times, rtol=rtol, atol=atol, method=solver,
                      options=options)[-1]

    values, nfe_mean, nfe_max = _solve_batches(
        model, data, integrate, method=method, probe=probe, num_probes=num_probes, seed=seed,
        indices=indices, batch_size=batch_size, dtype=dtype, dequantise=dequantise)
    return _result(values, model=model, method=method, probe=probe, eps=eps, solver=solver,
                   rtol=rtol, atol=atol, nfe=(nfe_mean, nfe_max), seed=seed)
