"""Built-in metrics of a deterministic sampler's own error: ODE error and exact KL.

* ``ode_error``: RMS distance per dimension between the trial's samples and a tight
  adaptive PF-ODE solve from the same initial noise (`harness.metrics.ode_error`); any
  dimension. The references depend only on (model, seed, sample index) and are kept in
  the suite's cache, so every sampler and step budget of a seed shares them.
* ``discrete_kl``: KL(q_N || p) of the sampler's output distribution q_N, its density
  exact by the change of variables through the sampler's discrete map
  (`harness.metrics.discrete_kl`); for models of dimension <= `max_dim` (256).

Both apply to deterministic samplers only (`capabilities.stochastic` False); for the
others `compute` returns no value (the metric is omitted for that trial). A sampler
that is not invertible at the trial's step count gets no KL either: the reason ("not
invertible at N = ...") is logged as the parameter `discrete_kl_status` and printed.

Under classifier-free guidance the sampler integrates the guided PF-ODE, so `ode_error`
solves its reference through the same guided model (`TrialContext.guide`: each sample's
label, the trial's scale); references are shared only between trials of one scale, and
each is kept under its sample's label. A guided model's drift comes from its denoiser
and is 0/0 at sigma = 0, so its reference ends at t_min with one Euler step even on the
oracles (`ode_error_reference_end` says so; on the conditional oracle at w = 2 that step
moves the reference by ~2e-5). `discrete_kl` gives no value for a guided trial
(its `discrete_kl_status` says why): what it compares with, the oracle's data density or
the model's own PF-ODE density, belongs to the unguided model, and the guided target
p_w(x | c), proportional to p(x | c)^w p(x)^(1 - w), has no closed-form normalised
density for w other than 0 and 1.

Registered through `harness_register_metrics`, the door every metric plugin uses.
Their work runs on a float64 copy of the model (its own NFE counter; `ode_error` can be
told otherwise), so it never counts as the trial's sampling NFE. Under torchrun every
process computes them from all of the trial's samples (identical values, duplicated
work).
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch
from torch import Tensor

from harness import (
    Metric,
    ParameterError,
    ScoreModel,
    SuiteContext,
    TrialContext,
    hookimpl,
)
from harness.metrics import (
    DISCRETE_KL_MAX_DIM,
    NLL_METHODS,
    REFERENCE_SOLVER,
    REFERENCE_TOLERANCE,
    DiscreteDensity,
    NotInvertibleError,
    ReferenceStore,
    float64_model,
    initial_state,
    ode_nll,
    reference_solve,
    sampler_log_density,
)
from harness.metrics.discrete_kl import discrete_kl
from harness.metrics.ode_error import ode_error

harness_api_version = 1

DTYPES = {"float64": torch.float64, "float32": torch.float32}

#: Why a guided trial has no discrete KL (see the module docstring).
GUIDED_STATUS = ("not computed for a guided trial: its target p(x|c)^w p(x)^(1-w) has no "
                 "closed-form normalised density for w other than 0 and 1, and the "
                 "metric's densities are those of the unguided model")


class _SamplerErrorMetric(Metric):
    """Options with defaults (unknown keys refused); the model in the requested dtype."""

    higher_is_better = False
    DEFAULTS: dict[str, Any] = {}

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def options(self, suite: SuiteContext) -> dict[str, Any]:
        opts = super().options(suite)
        if "dtype" in opts and opts["dtype"] not in (*DTYPES, "model"):
            raise ParameterError(f"metric {self.name!r}: dtype must be float64, float32 or "
                                 f"model, got {opts['dtype']!r}")
        num = opts["num_samples"]
        if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 2):
            raise ParameterError(f"metric {self.name!r}: num_samples must be an integer >= 2 "
                                 f"(or absent: all of the trial's samples), got {num!r}")
        return opts

    def prepare(self, suite: SuiteContext) -> None:
        self.options(suite)  # bad options fail before any trial runs

    def params(self) -> dict[str, Any]:
        return dict(self.info)

    def samples_read(self, suite: SuiteContext) -> Optional[int]:
        # The first num_samples of them (`indices`); all when it is absent.
        return self.options(suite)["num_samples"]

    @staticmethod
    def working_model(suite: SuiteContext, dtype: str) -> tuple[ScoreModel, torch.dtype]:
        """The model to measure with and its state dtype; a float64 copy is made once."""
        if dtype == "model":
            return suite.model, suite.dtype or suite.model.dtype
        if DTYPES[dtype] == torch.float64:
            key = ("sampler_error.model", "float64")
            if key not in suite.cache:
                suite.cache[key] = float64_model(suite.model)
            return suite.cache[key], torch.float64
        return suite.model, DTYPES[dtype]

    @staticmethod
    def indices(trial: TrialContext, num: Optional[int]) -> list[int]:
        total = trial.samples.shape[0]
        return list(range(total if num is None else min(num, total)))


class ODEErrorMetric(_SamplerErrorMetric):
    """RMS distance per dimension to the exact PF-ODE solution from the same x_T."""

    name = "ode_error"
    unit = "RMS/dim"
    description = ("RMS distance per dimension between a deterministic sampler's samples "
                   "and a tight adaptive PF-ODE solve from the same initial noise")
    DEFAULTS = {"num_samples": None, "rtol": REFERENCE_TOLERANCE,
                "atol": REFERENCE_TOLERANCE, "solver": REFERENCE_SOLVER,
                "dtype": "float64", "batch_size": None, "cache": True, "cache_dir": None}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        self.info = {}
        if trial.sampler.capabilities.stochastic:
            return {}
        suite = trial.suite
        opts = self.options(suite)
        indices = self.indices(trial, opts["num_samples"])
        reference, nfe, end = self._references(trial, indices, opts)
        result = ode_error(trial.samples[indices], reference)
        self.info = {
            "ode_error_definition": "sqrt(mean over samples and dimensions of (x - x*)^2), "
                                    "x* the adaptive PF-ODE solution from the same x_T",
            "ode_error_units": "data units (RMS per dimension)",
            "ode_error_reference_solver": opts["solver"],
            "ode_error_reference_rtol": opts["rtol"], "ode_error_reference_atol": opts["atol"],
            "ode_error_reference_dtype": opts["dtype"],
            "ode_error_reference_end": end,
            "ode_error_stderr": "delta method over samples",
        }
        if trial.guidance is not None:
            self.info["ode_error_reference_model"] = (
                f"the guided model (w = {trial.guidance:g}, each sample's label): the flow "
                f"the trial's sampler discretised")
        return {self.name: result.rms, f"{self.name}_stderr": result.stderr,
                f"{self.name}_max": result.max_sample_rms,
                f"{self.name}_num_samples": float(result.num_samples),
                f"{self.name}_reference_nfe": nfe}

    def _references(self, trial: TrialContext, indices: list[int], opts: dict[str, Any]
                    ) -> tuple[Tensor, float, str]:
        """The reference solutions of these sample indices, solving only those neither in
        this suite's memory nor in the disk store (`harness.metrics.reference_store`)."""
        suite = trial.suite
        if trial.guidance is not None and trial.labels is None:
            raise ParameterError(f"metric {self.name!r}: a guided trial (w = "
                                 f"{trial.guidance:g}) needs its samples' labels")
        model, dtype = self.working_model(suite, opts["dtype"])
        # A guided trial's flow is that of its guided model: its references belong to its
        # scale, and each to its sample's label (whatever rule dealt the labels).
        disk = self._disk_store(trial, opts, dtype)
        cache_key = ("ode_error.reference", disk)
        if cache_key not in suite.cache:
            suite.cache[cache_key] = (disk.load() if opts["cache"]
                                      else {"x": {}, "nfe": {}, "end": ""})
        store: dict[str, Any] = suite.cache[cache_key]
        names = {i: self._reference_name(trial, i) for i in indices}
        missing = [i for i in indices if names[i] not in store["x"]]
        if missing:
            started = time.perf_counter()
            suite.announce(
                f"ode_error: solving the PF-ODE from {len(missing)} initial states of seed "
                f"{trial.seed} ({opts['solver']}, rtol = {opts['rtol']:g}, atol = "
                f"{opts['atol']:g}, {opts['dtype']}), once for every sampler and budget"
                + (" and kept on disk for later runs" if opts["cache"] else ""))
        size = opts["batch_size"] or max(len(missing), 1)
        for start in range(0, len(missing), size):
            part = missing[start:start + size]
            # x_T exactly as the trial drew it (its dtype), then the solve's dtype.
            x_T = initial_state(suite.model, trial.seed, part, suite.dtype)
            solved = reference_solve(trial.guide(model, part), x_T.to(dtype),
                                     rtol=opts["rtol"], atol=opts["atol"],
                                     solver=opts["solver"], dtype=dtype)
            for row, i in enumerate(part):
                store["x"][names[i]], store["nfe"][names[i]] = solved.x[row], solved.nfe
            store["end"] = solved.end
        if missing:
            if opts["cache"]:
                disk.save(store)
            nfe = sum(store["nfe"][names[i]] for i in missing) / len(missing)
            suite.announce(f"ode_error: {len(missing)} references solved in "
                           f"{time.perf_counter() - started:.1f} s ({nfe:.0f} NFE each)")
        reference = torch.stack([store["x"][names[i]] for i in indices])
        nfe = sum(store["nfe"][names[i]] for i in indices) / len(indices)
        return reference, nfe, store["end"]

    @staticmethod
    def _disk_store(trial: TrialContext, opts: dict[str, Any], dtype: torch.dtype
                    ) -> ReferenceStore:
        """Where this trial's references are kept: keyed by all they depend on (the
        model's fingerprint is made once per suite)."""
        suite = trial.suite
        if "ode_error.fingerprint" not in suite.cache:
            suite.cache["ode_error.fingerprint"] = ReferenceStore.fingerprint(suite.model)
        state_dtype = suite.dtype or suite.model.dtype
        return ReferenceStore(
            model=suite.cache["ode_error.fingerprint"], seed=trial.seed,
            state_dtype=str(state_dtype), solve_dtype=str(dtype), solver=opts["solver"],
            rtol=float(opts["rtol"]), atol=float(opts["atol"]), guidance=trial.guidance,
            device_type=torch.device(suite.model.device).type,
            cache_dir=opts["cache_dir"])

    @staticmethod
    def _reference_name(trial: TrialContext, index: int) -> Any:
        """What sample `index`'s reference depends on beyond the cache key: the index,
        and under guidance its label."""
        if trial.guidance is None or trial.labels is None:
            return index
        return index, int(trial.labels[index])


class DiscreteKLMetric(_SamplerErrorMetric):
    """KL(q_N || p) with q_N's density exact through the sampler's discrete map."""

    name = "discrete_kl"
    unit = "bits/dim"
    description = ("KL divergence of a deterministic sampler's output distribution to the "
                   "target (oracle: the data; trained model: its own PF-ODE density), "
                   "exact density by change of variables through the discrete map")
    # Always float64: the Jacobian of N strongly contracting steps (sigma from 80 to
    # 0.002 shrinks the digits' volume by e^-480) is ill-conditioned, and float32
    # misjudges the sign of its determinant (a false "not invertible" on the digits model).
    DEFAULTS = {"num_samples": 32, "max_dim": DISCRETE_KL_MAX_DIM, "batch_size": None,
                "method": "exact", "num_probes": 4, "rtol": 1e-6, "atol": 1e-6, "seed": 0}

    def applies_to(self, suite: SuiteContext) -> bool:
        return suite.model.data.dim <= int(self.options(suite)["max_dim"])

    def prepare(self, suite: SuiteContext) -> None:
        opts = self.options(suite)
        if opts["method"] not in NLL_METHODS:
            raise ParameterError(f"metric {self.name!r}: method must be one of "
                                 f"{', '.join(NLL_METHODS)}, got {opts['method']!r}")

    def compute(self, trial: TrialContext) -> dict[str, float]:
        self.info = {}
        if trial.sampler.capabilities.stochastic:
            return {}
        if trial.guidance is not None:
            self.info = {f"{self.name}_status": GUIDED_STATUS}
            return {}
        suite = trial.suite
        opts = self.options(suite)
        model, dtype = self.working_model(suite, "float64")
        # A model with a closed-form density (the Gaussian-mixture oracles) is compared
        # with it at t = 0; any other with its own PF-ODE density at t_min.
        oracle = callable(getattr(suite.model, "log_prob", None))
        indices = self.indices(trial, opts["num_samples"])
        if not oracle and trial.grid.steps < 2:
            self.info = {f"{self.name}_status": "needs a grid of at least 2 steps (the "
                                                "state at t_min is compared)"}
            return {}
        at_time = None if oracle else float(trial.grid.t[-2])
        try:
            density = self._density(trial, model, dtype, indices, at_time, opts)
        except NotInvertibleError as err:
            self.info = {f"{self.name}_status": str(err)}
            trial.suite.announce(f"{self.name}: {trial.sampler.name} ({trial.grid.steps} "
                                 f"steps): {err}; no value for this trial")
            return {}
        if oracle:
            result = discrete_kl(density, lambda x: model.log_prob(x.flatten(1), 0.0))
            reference = "the oracle's closed-form log p_0 at the sampler's outputs (t = 0)"
        else:
            log_p, probe_error = self._model_log_density(model, density, indices, opts)
            result = discrete_kl(density, lambda x: log_p, probe_error)
            reference = (f"the model's PF-ODE density at t_min = {at_time:g} (ode_nll: "
                         f"{opts['method']} trace, dopri5 rtol {opts['rtol']:g}, atol "
                         f"{opts['atol']:g}), at the sampler's state there, before its "
                         f"final step to t = 0")
        self.info = {
            f"{self.name}_status": "ok",
            f"{self.name}_definition": "E_q[log q_N(x) - log p(x)] over the sampler's own "
                                       "states, log q_N by change of variables through its "
                                       "steps (full Jacobian, forward-mode autodiff)",
            f"{self.name}_units": "bits/dim = nats / (D log 2); also nats/dim and nats",
            f"{self.name}_reference": reference,
            f"{self.name}_stderr": "Monte-Carlo standard error over the evaluated samples"
                                   + ("" if oracle else ", and of the Hutchinson estimate "
                                      "of log p when method = hutchinson"),
            f"{self.name}_invertibility": "det of the Jacobian nonzero and of one sign at "
                                          "the evaluated samples after every step",
            f"{self.name}_dtype": "float64",
        }
        per_bit = result.dim * math.log(2)
        return {self.name: result.bits_per_dim,
                f"{self.name}_stderr": result.total_stderr / per_bit,
                f"{self.name}_nats_per_dim": result.nats_per_dim,
                f"{self.name}_nats": result.nats,
                f"{self.name}_nats_stderr": result.total_stderr,
                f"{self.name}_num_samples": float(result.num_points)}

    def _density(self, trial: TrialContext, model: ScoreModel, dtype: torch.dtype,
                 indices: list[int], at_time: Optional[float], opts: dict[str, Any]
                 ) -> DiscreteDensity:
        """log q_N at the trial's own trajectories (its x_T), in batches of samples."""
        suite = trial.suite
        size = opts["batch_size"] or len(indices)
        parts = []
        for start in range(0, len(indices), size):
            part = indices[start:start + size]
            x_T = initial_state(suite.model, trial.seed, part, suite.dtype)
            parts.append(sampler_log_density(
                model, trial.sampler, trial.grid, x_T.to(model.device, dtype),
                trial.params, at_time=at_time))
        first = parts[0]
        return DiscreteDensity(torch.cat([p.x for p in parts]),
                                      torch.cat([p.log_q for p in parts]),
                                      torch.cat([p.log_det for p in parts]), first.t,
                                      first.steps)

    @staticmethod
    def _model_log_density(model: ScoreModel, density: DiscreteDensity,
                           indices: list[int], opts: dict[str, Any]) -> tuple[Tensor, float]:
        """log p_theta at the states (the model's PF-ODE density at their time), and the
        Monte-Carlo error of its mean (0 for the exact trace)."""
        result = ode_nll(model, density.x, method=opts["method"],
                         num_probes=opts["num_probes"], eps=density.t,
                         rtol=opts["rtol"], atol=opts["atol"], seed=opts["seed"],
                         indices=indices, batch_size=opts["batch_size"],
                         dtype=model.dtype, dequantise=False)
        log_p = -result.values.mean(1)
        return log_p, float(result.probe_stderr or 0.0)


METRICS = (ODEErrorMetric, DiscreteKLMetric)


@hookimpl
def harness_register_metrics(register):
    for cls in METRICS:
        register(cls())
