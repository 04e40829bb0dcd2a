"""The sampler kit: the checks a sampler must pass before its numbers mean anything.

One call runs them all and raises `ConformanceError` (an `AssertionError`) saying what
is wrong::

    from harness.testing import check_sampler
    report = check_sampler("dpmpp_2m")          # or a `harness.Sampler` object
    print(report)

and one line turns them into a pytest test, one case per sampler::

    from harness.testing import conformance_test
    test_conformance = conformance_test("dpmpp_2m", "ddim")

The checks run in the order of `CHECKS`, each a `check_*` function below: registration,
documentation (citation; a missing docstring is a warning), parameters, output (shape,
dtype, device, finite), seed, batch (independence), nfe, capabilities (deterministic,
stochastic, pf_ode), model (the output follows it), final_step (no noise left at sigma =
0), order (the declared `order` against the measured slope of log error on log step
count, as torchsde's diagnostics fit it) and convergence (to the exact 64-D Gaussian
mixture under VP and EDM). Every check reports a verdict: a sampler the harness cannot
call (registration) gets every other check skipped with that reason, and the expensive
order and convergence checks run only when the cheap ones pass (documentation aside), so
a broken sampler is reported within a second. Each broken behaviour fails the check
that names it only: checks that need a finite output are skipped when `output` found
NaN/Inf, and every run starts from its own copy of the input, so an in-place write fails
`output` alone.
docs/plugins.md has the table of what each check demands.

Metrics have their own checks, `check_metric(metric)` and `metric_conformance_test(...)`
(declaration, values, repeatable, scope; `harness.plugin.metric_kit`); both kits
report through `harness.plugin.check_report`, and plugin authors import them from
`harness.testing`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import typing
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..core.counting import CountedModel, NFECounter
from ..core.guidance import GuidedModel
from ..core.labels import sample_labels
from ..core.model import ScoreModel
from ..core.noise import SampleNoise
from ..core.sampler import Capabilities, Params, Sampler
from ..core.sampling import generate
from ..core.schedules import TimeGrid, make_grid
from ..core.sde import make_sde
from ..errors import ParameterError
from ..metrics.order import (
    ODE_ORDER_STEPS,
    ORDER_T_END,
    WEAK_ORDER_STEPS,
    WEAK_SAMPLES,
    exact_weak_errors,
    fitted_order,
    monte_carlo_weak_errors,
    ode_order_errors,
)
from ..models.oracle import ConditionalGaussianMixture, GaussianMixture, mixture_64d
from .check_report import CheckReport, CheckResult, KitFailure
from .manager import get_plugins

#: Batch independence: sample i may differ only by float64 rounding between batches.
BATCH_RTOL = 1e-9
#: `pf_ode` round trip data -> noise -> data in `ROUNDTRIP_STEPS` steps each way: allowed
#: rms error relative to the data's rms (first-order Euler makes about 0.01).
ROUNDTRIP_STEPS = 128
ROUNDTRIP_TOL = 0.05
#: Convergence: allowed distance of the sample mean and covariance from the exact
#: moments, in standard errors of an exact sample of the same size (which sits near 1).
MOMENT_Z = 2.5
#: Convergence: allowed relative excess of the sliced Wasserstein distance to exact
#: samples over that between two exact sample sets of the same size.
SW_MARGIN = 0.5
#: Convergence problems: the oracle's forward processes.
PROCESSES = ("vp", "edm")
#: Order, deterministic samplers: the fitted order may fall this far below the declared
#: one (the PF-ODE error has no sampling noise; see `harness.metrics.order`)...
ORDER_TOL = 0.3
#: ... and rise this far above it. Fixed-coefficient multistep schemes on a non-uniform
#: grid are steeper over the kit's 32-256 steps than asymptotically: measured, iPNDM
#: (AB4 weights, order 2) 2.34 and the libraries' DPM-Solver++(3M) ("half", order 2)
#: 2.34, i.e. +0.34; every other built-in fits at or below its order. A whole order
#: under-declared shows at least +0.80 (dpmpp_2m 1.80, heun 1.86 declared 1), so 0.5
#: passes the first and fails the second. (The window has its limit: iPNDM with
#: max_order = 3 fits 2.99 here and 1.8 at 256-2048 steps; capabilities describe the
#: defaults, and the kit checks those.)
ORDER_OVERSHOOT = 0.5
#: Order, stochastic samplers: the fitted weak order must be at least the declared order
#: minus ORDER_TOL where the weak error is computed exactly (the sampler is affine on the
#: kit's Gaussian), minus WEAK_ORDER_TOL where it is a Monte Carlo estimate. Only a lower
#: bound: on a linear problem a scheme may converge faster than it does in general.
#: Errors within WEAK_RESOLUTION Monte Carlo standard errors of zero, or within ROUNDING
#: of it when exact, are left out of the fit.
WEAK_ORDER_TOL = 0.4
WEAK_RESOLUTION = 3.0
ROUNDING = 1e-12
#: Order 0 (a fixed bias): the largest slope allowed between the two finest step counts.
#: Measured there: restart at its defaults 0.40 (its floor not yet reached: 0.12 and 0.03
#: at twice and four times the steps), predictor_corrector below 0 (its error grows);
#: schemes that converge, 0.92 (ddim_eta) to 1.97 (langevin).
BIAS_SLOPE = 0.6


class ConformanceError(KitFailure):
    """A sampler failed the kit; `report` has every check's result."""


@dataclass
class ConformanceReport(CheckReport):
    """The result of `check_sampler`: one `CheckResult` per check, in order."""

    KIND = "sampler"
    sampler: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.sampler


class _Fail(Exception):
    """A check's verdict: the message says what is wrong and what to do."""


class _Skip(Exception):
    """A check that cannot judge, because another check found what stops it."""


class _Warn(Exception):
    """A check that passes with a remark: something a user misses, not a wrong result."""


@dataclass
class _Setup:
    sampler: Sampler
    params: Params
    device: torch.device
    steps: int
    samples: int
    schedule: str
    #: Set by `check_output`: the output had NaN/Inf, so checks of its values are moot.
    nonfinite: bool = False
    #: Run every check on a guided conditional oracle at this scale (None: unguided).
    guidance: Optional[float] = None
    #: Counts the guided evaluations of every guided model the checks build.
    guided_nfe: NFECounter = dataclasses.field(default_factory=NFECounter)


# --- the oracle the checks run on -------------------------------------------------------

def kit_oracle(process: str = "vp", shift: float = 0.0, device: Any = "cpu",
               dtype: torch.dtype = torch.float64, conditional: bool = False
               ) -> GaussianMixture:
    """The 64-D mixture (`harness.models.oracle.mixture_64d`) under a process, its means moved by
    `shift` (so that a sampler can be seen to follow the model); `conditional`: the same
    mixture as a class-conditional model (class = component), for guided checks."""
    base = mixture_64d(make_sde(process))
    kind = ConditionalGaussianMixture if conditional else GaussianMixture
    return kind(base.weights, base.means + shift, base.variances.sqrt(), base.sde,
                dtype=dtype).to(device)


def _oracle(s: _Setup, process: str = "vp", shift: float = 0.0,
            dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The checks' oracle on the kit's device: the conditional one when guided."""
    return kit_oracle(process, shift, s.device, dtype, conditional=s.guidance is not None)


def _guide(s: _Setup, model: Any, seed: int, indices: Any) -> Any:
    """What the sampler is given: `model`, or under guidance the model guided towards the
    labels of samples `indices` of seed `seed`, its evaluations counted in `guided_nfe`
    (as the runner does for a guided trial)."""
    if s.guidance is None or isinstance(model, _DriftOnly):
        return model
    labels = sample_labels(seed, indices, model.num_classes, device=model.device)
    return CountedModel(GuidedModel(model, labels, s.guidance), nfe=s.guided_nfe)


def _generate(s: _Setup, model: Any, grid: TimeGrid, seed: int, indices: Any) -> Tensor:
    indices = list(indices)
    return generate(_guide(s, model, seed, indices), s.sampler, grid, seed, indices,
                    s.params)


def _count_raw_rows(model: ScoreModel) -> NFECounter:
    """Counts the rows reaching the uncounted `_denoise` and `_score`.

    Every evaluation through a `CountedModel` around `model` reaches one of them once, so
    more rows here than in its `nfe` means an evaluation bypassed the counted interface.
    """
    raw = NFECounter()
    for name in ("_denoise", "_score"):
        setattr(model, name, _counting(getattr(model, name), raw))
    return raw


def _counting(fn: Callable[..., Tensor], counter: NFECounter) -> Callable[..., Tensor]:
    def counted(x: Tensor, *args: Any) -> Tensor:
        counter.add(x.shape[0])
        return fn(x, *args)
    return counted


class _DriftOnly:
    """A model through which only `ode_drift` works: all that `pf_ode` promises to use."""

    def __init__(self, model: GaussianMixture):
        self._model = model
        self.forbidden: list[str] = []

    def ode_drift(self, x: Tensor, t: Any) -> Tensor:
        return self._model.ode_drift(x, t)

    def __getattr__(self, name: str) -> Any:
        if name in ("score", "denoise", "forward", "_score", "_denoise"):
            self.forbidden.append(name)
            raise _Fail(f"declares pf_ode=True but called model.{name}; a PF-ODE "
                        f"integrator may only use model.ode_drift")
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.__getattr__("forward")


# --- the checks ---------------------------------------------------------------------------

def _run(s: _Setup, model: Any, x: Tensor, grid: TimeGrid, noise: Callable,
         callback: Optional[Callable] = None, copy: bool = True) -> Tensor:
    """The sampler on `x`; on a copy of it unless `copy=False` (only `output` looks for
    in-place writes: any other check reusing x would otherwise blame them on itself)."""
    with torch.no_grad():
        return s.sampler.fn(_guide(s, model, 0, range(x.shape[0])),
                            x.clone() if copy else x, grid, noise, callback, s.params)


def _identical(a: Tensor, b: Tensor) -> bool:
    """Equal values, NaN equal to NaN (a NaN is `output`'s failure, not `seed`'s)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _needs_finite_output(s: _Setup) -> None:
    if s.nonfinite:
        raise _Skip("needs a finite output (see output)")


def _start(s: _Setup, model: GaussianMixture, seed: int, n: int) -> tuple[Tensor, SampleNoise]:
    noise = SampleNoise(seed, range(n), model.data.shape, device=s.device, dtype=model.dtype)
    return model.sde.prior_std * noise(), noise


def check_registration(s: _Setup) -> str:
    """A `Sampler` with capabilities and the contract's call shape: what running it needs."""
    sampler = s.sampler
    if not isinstance(sampler.capabilities, Capabilities):
        raise _Fail("capabilities must be a harness.Capabilities")
    try:
        inspect.signature(sampler.fn).bind(*range(6))
    except TypeError:
        raise _Fail("fn must accept (model, x, grid, noise, callback, params)") from None
    for steps in (1, 5):
        nfe = sampler.expected_nfe(steps, s.params)
        if not isinstance(nfe, int) or nfe < 1:
            raise _Fail(f"expected_nfe({steps}) = {nfe!r}: the capabilities must give a "
                        f"positive number of evaluations")
    return f"capabilities {sampler.capabilities.to_dict(s.params)}"


def check_documentation(s: _Setup) -> str:
    """A citation (required) and a docstring whose first line is the one-line summary
    `harness plugins` shows (a warning when missing: the numbers do not depend on it)."""
    sampler = s.sampler
    if not sampler.citation.strip():
        raise _Fail("no citation: pass Sampler(citation=...) naming the paper and algorithm")
    if not sampler.summary:
        raise _Warn("the sampler function has no docstring; its first line is the "
                    "summary `harness plugins` shows")
    return f"{sampler.summary!r}"


def _violations(f: dataclasses.Field, kind: Any) -> Iterable[tuple[str, Any]]:
    """(description, value) pairs that the field's declared limits must refuse."""
    meta = f.metadata
    if kind is bool:
        return
    one = 1 if kind is int else 1.0
    steps = {"ge": -one, "gt": 0, "le": one, "lt": 0}
    for key, step in steps.items():
        bound = meta.get(key)
        if bound is not None and math.isfinite(bound):
            yield f"{key}={bound}", (int(bound) if kind is int else float(bound)) + step
    choices = meta.get("choices")
    if choices:
        bad = max(choices) + 1 if kind is int else "not-" + "-".join(map(str, choices))
        yield "choices", bad


def check_parameters(s: _Setup) -> str:
    """Every declared range and choice is enforced, naming the parameter."""
    hints = typing.get_type_hints(s.sampler.params)
    tried = 0
    for f in dataclasses.fields(s.sampler.params):
        kind = hints.get(f.name, type(f.default))
        for limit, value in _violations(f, kind):
            tried += 1
            try:
                s.sampler.make_params({f.name: value})
            except ParameterError as err:
                if f.name not in str(err):
                    raise _Fail(f"refusing {f.name}={value!r} ({limit}) with a message "
                                f"that does not name the parameter: {err}") from None
            else:
                raise _Fail(f"parameter {f.name!r} declares {limit} but {value!r} was "
                            f"accepted")
    return f"{tried} out-of-range values refused" if tried else "no declared ranges"


def check_output(s: _Setup) -> str:
    """Shape, dtype and device of the input; finite; input untouched; callback per step."""
    model = _oracle(s, dtype=torch.float32)
    grid = make_grid(model.sde, "karras", 8)
    x, noise = _start(s, model, seed=1, n=8)
    before, seen = x.clone(), []
    out = _run(s, model, x, grid, noise, seen.append, copy=False)
    if not isinstance(out, Tensor):
        raise _Fail(f"returned {type(out).__name__}, not a tensor")
    got = (tuple(out.shape), out.dtype, out.device)
    if got != (tuple(x.shape), x.dtype, x.device):
        raise _Fail(f"output has shape, dtype, device {got}; the input had "
                    f"{(tuple(x.shape), x.dtype, x.device)}")
    if not torch.isfinite(out).all():
        s.nonfinite = True
        raise _Fail(f"{int((~torch.isfinite(out)).sum())} NaN/Inf values in the output")
    if not torch.equal(x, before):
        raise _Fail("modified its input x in place")
    if len(seen) != grid.steps or not all({"i", "t", "x"} <= set(d) for d in seen):
        raise _Fail(f"the callback must be called once per step ({grid.steps}) with a "
                    f"dict holding 'i', 't', 'x'; it was called {len(seen)} times")
    return f"(8, 64) float32 on {x.device}, finite, callback once per step"


def check_seed(s: _Setup) -> str:
    """The same seed gives identical output."""
    model = _oracle(s)
    grid = make_grid(model.sde, "karras", 8)
    a, b = (_generate(s, model, grid, 3, range(8)) for _ in range(2))
    if not _identical(a, b):
        raise _Fail(f"two runs with the same seed differ (max |diff| "
                    f"{(a - b).abs().max():.3g}): the sampler draws randomness outside "
                    f"the `noise` source it is given (e.g. torch.randn with the global "
                    f"generator)")
    return "identical"


def check_batch(s: _Setup) -> str:
    """Sample i is the same whatever else is in its batch, and wherever it sits there."""
    model = _oracle(s)
    grid = make_grid(model.sde, "karras", 8)
    whole = _generate(s, model, grid, 5, range(16))
    halves = torch.cat([_generate(s, model, grid, 5, range(i, i + 8)) for i in (0, 8)])
    backwards = _generate(s, model, grid, 5, range(15, -1, -1)).flip(0)
    for other, how in ((halves, "two batches of 8"), (backwards, "reversed order")):
        diff = (other - whole).abs().flatten(1).amax(1)
        tol = BATCH_RTOL * (1 + whole.abs().flatten(1).amax(1))
        if (diff > tol).any():
            i = int((diff / tol).argmax())
            raise _Fail(f"sample {i} differs by {diff[i]:.3g} between one batch of 16 and "
                        f"{how}: a sample's result depends on the others in its batch "
                        f"(batch statistics, noise coupled across the batch); use noise(x) "
                        f"(one stream per sample) and per-sample quantities")
    return "sample i identical in batches of 16, 8 + 8 and reversed"


def check_nfe(s: _Setup) -> str:
    """The count at the model equals `expected_nfe`; nothing bypasses the counter."""
    model = _oracle(s)
    raw, counts = _count_raw_rows(model), []
    counted = CountedModel(model)
    for steps, to_zero in ((3, True), (8, True), (8, False)):
        grid = make_grid(model.sde, "karras", steps)
        if not to_zero:   # stop at sigma_min: the last step is an ordinary one
            grid = TimeGrid(grid.t[:-1], grid.sigma[:-1], grid.scale[:-1], grid.schedule)
            steps -= 1
        counted.nfe.reset()
        raw.reset()
        s.guided_nfe.reset()
        _generate(s, counted, grid, 0, range(4))
        expected = s.sampler.expected_nfe(steps, s.params, grid.sigma[-1] == 0)
        if s.guidance is not None:  # the sampler's evaluations are the guided model's
            if s.guided_nfe.rows != 4 * expected:
                raise _Fail(f"declares {expected} NFE for {steps} steps but evaluated the "
                            f"guided model {s.guided_nfe.rows / 4:g} times per sample")
            counts.append(f"{steps} steps: {expected} guided")
            continue
        end = "sigma = 0" if to_zero else f"sigma = {grid.sigma[-1]:.3g}"
        if raw.rows != counted.nfe.rows:
            raise _Fail(f"{(raw.rows - counted.nfe.rows) / 4:g} evaluations per sample "
                        f"bypassed the counted interface (model._denoise/_score); call "
                        f"model.denoise, model.score or model.ode_drift")
        if counted.nfe.rows != 4 * expected:
            caps = s.sampler.capabilities
            raise _Fail(f"declares {expected} NFE for {steps} steps ending at {end} "
                        f"(nfe_per_step={caps.per_step(s.params)}, final_step_nfe="
                        f"{caps.final_step_nfe!r}) but the model was evaluated "
                        f"{counted.nfe.rows / 4:g} times per sample")
        counts.append(f"{steps} steps to {end}: {expected}")
    return "; ".join(counts)


def check_capabilities(s: _Setup) -> str:
    """What `Capabilities` declares holds: (non-)dependence on the noise, `pf_ode`."""
    caps = s.sampler.capabilities
    model = _oracle(s)
    grid = make_grid(model.sde, "karras", 8)
    x, _ = _start(s, model, seed=2, n=8)
    outs, draws = [], 0
    for seed in (10, 11):
        noise = SampleNoise(seed, range(8), model.data.shape, s.device, model.dtype)
        outs.append(_run(s, model, x, grid, noise))
        draws += noise.draws
    same = _identical(*outs)
    if not caps.stochastic and not same:
        raise _Fail(f"declares stochastic=False but its output changes with the noise "
                    f"stream (max |diff| {(outs[0] - outs[1]).abs().max():.3g})")
    found = "stochastic" if caps.stochastic else "deterministic"
    if caps.stochastic and same:
        # Capabilities describe the defaults; e.g. langevin with S_churn=0 is deterministic.
        if s.params == s.sampler.make_params():
            raise _Fail(f"declares stochastic=True but its output does not depend on the "
                        f"noise ({draws} draws); declare stochastic=False")
        found = "deterministic at these params (stochastic at the defaults)"
    if caps.pf_ode:
        found += "; " + _check_pf_ode(s)
    return found


def _check_pf_ode(s: _Setup) -> str:
    """Only `ode_drift` is used, and data -> noise -> data returns to the start."""
    model = _oracle(s)
    proxy = _DriftOnly(model)
    grid = make_grid(model.sde, "karras", ROUNDTRIP_STEPS)
    data = kit_oracle("vp").sample_clean(16, torch.Generator().manual_seed(4)).to(s.device)
    unused = SampleNoise(0, range(16), model.data.shape, s.device, model.dtype)
    noised = _run(s, proxy, data, grid.reversed(), unused)
    back = _run(s, proxy, noised, grid, unused)
    if proxy.forbidden:  # in case the sampler swallowed the exception
        raise _Fail(f"declares pf_ode=True but called model.{proxy.forbidden[0]}")
    if s.nonfinite:
        return "ode_drift only; round trip not judged (needs a finite output, see output)"
    error = float((back - data).pow(2).mean().sqrt() / data.pow(2).mean().sqrt())
    if not error <= ROUNDTRIP_TOL:
        raise _Fail(f"declares pf_ode=True but integrating the reversed grid (data -> "
                    f"noise) and then the grid returns to the data with relative rms error "
                    f"{error:.3g} at {ROUNDTRIP_STEPS} steps (allowed {ROUNDTRIP_TOL})")
    return f"ode_drift only; round trip error {error:.2g} at {ROUNDTRIP_STEPS} steps"


def check_model(s: _Setup) -> str:
    """The output follows the model: shifting the mixture shifts the samples."""
    _needs_finite_output(s)
    grid = make_grid(make_sde("vp"), "karras", 32)
    base, moved = (_generate(s, _oracle(s, shift=shift), grid, 6, range(16))
                   for shift in (0.0, 1.0))
    shift = float((moved - base).mean())
    if not 0.5 <= shift <= 1.5:
        raise _Fail(f"output does not follow the model: moving every mixture component by "
                    f"+1 moves the samples by {shift:.3g} on average (expected about 1); "
                    f"the update must come from model.denoise, model.score or "
                    f"model.ode_drift")
    return f"shifting the mixture by 1 shifts the samples by {shift:.3f}"


def check_final_step(s: _Setup) -> str:
    """Noise drawn after the last network evaluation cannot be denoised: it must not
    reach the output. Found by replaying a run's draws up to that point, then others."""
    _needs_finite_output(s)
    model = _oracle(s)
    grid = make_grid(model.sde, "karras", 16)
    x, noise = _start(s, model, seed=8, n=64)
    counted = CountedModel(model)
    draws, calls_before = [], []

    def recording(like=None):
        z = noise(like)
        draws.append(z.clone())
        calls_before.append(counted.nfe.calls)
        return z

    first = _run(s, counted, x, grid, recording)
    late = sum(c == counted.nfe.calls for c in calls_before)
    if not late:
        return "no noise drawn after the last network evaluation"
    fresh = SampleNoise(9, range(64), model.data.shape, s.device, model.dtype)
    replay = iter(draws[: len(draws) - late])

    def replaying(like=None):
        z = next(replay, None)
        return fresh(like) if z is None else z

    second = _run(s, model, x, grid, replaying)
    excess = float((first - second).pow(2).mean() / 2)
    if excess > 0:
        _, cov = model.moments()
        raise _Fail(f"final step leaves noise in: {late} noise draw(s) after the last "
                    f"network evaluation reach the output and add variance {excess:.3g} per "
                    f"dimension ({excess / float(cov.diag().mean()):.2%} of the oracle's); a "
                    f"grid ending at sigma = 0 must end with the denoised mean")
    return f"{late} draw(s) after the last evaluation do not reach the output"


def _sliced_w2(a: Tensor, b: Tensor, directions: Tensor) -> float:
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return float((pa - pb).pow(2).mean().sqrt())


def _needs_no_guidance(s: _Setup) -> None:
    if s.guidance is not None:
        raise _Skip("measured against the oracle's exact distribution, which a guided "
                    "model (w != 1) does not sample: run the kit unguided for this check")


def check_order(s: _Setup) -> str:
    """The declared `order` is the measured one: the slope of log error on log step
    count (strong error of the PF-ODE solution for deterministic samplers, weak error
    for stochastic ones), as torchsde's diagnostics fit it; order 0 (a fixed bias): the
    error does not vanish."""
    _needs_no_guidance(s)
    _needs_finite_output(s)
    declared = float(s.sampler.capabilities.order)
    if not s.sampler.capabilities.stochastic:
        return _check_ode_order(s, declared)
    return _check_weak_order(s, declared)


def _check_ode_order(s: _Setup, declared: float) -> str:
    counts = " / ".join(map(str, ODE_ORDER_STEPS))
    errors = ode_order_errors(s.sampler, s.params, s.device)
    if not all(math.isfinite(e) for e in errors):
        raise _Fail(f"PF-ODE errors {errors} at {counts} steps are not finite")
    shown = ", ".join(f"{e:.3g}" for e in errors)
    what = (f"PF-ODE error on the 64-D mixture (VP, {counts} uniform steps to t = "
            f"{ORDER_T_END}: {shown})")
    if declared == 0:
        return _check_bias(ODE_ORDER_STEPS, errors, [0.0] * len(errors), what)
    if all(e == 0 for e in errors):
        return "exact on the PF-ODE at every step count"
    if not all(e > 0 for e in errors):
        raise _Fail(f"PF-ODE errors {errors} at {counts} steps: exact at some step "
                    f"counts only, so no order can be fitted")
    fitted = fitted_order(ODE_ORDER_STEPS, errors)
    if not declared - ORDER_TOL <= fitted <= declared + ORDER_OVERSHOOT:
        raise _Fail(f"declares order {declared:g} but its {what} falls like "
                    f"h^{fitted:.2f} (allowed from {ORDER_TOL} below to {ORDER_OVERSHOOT} "
                    f"above the declared order); declare order={max(round(fitted), 1)}")
    return f"PF-ODE error falls like h^{fitted:.2f} (declared {declared:g}; {shown})"


def _check_weak_order(s: _Setup, declared: float) -> str:
    counts = " / ".join(map(str, WEAK_ORDER_STEPS))
    exact = exact_weak_errors(s.sampler, s.params, s.device)
    if exact is not None:
        errors, ses, tol = exact, [0.0] * len(exact), ORDER_TOL
        how = "computed exactly from its affine map of x_T and noise"
        shown = ", ".join(f"{e:.3g}" for e in errors)
    else:
        errors, ses = (list(c) for c in zip(*monte_carlo_weak_errors(s.sampler, s.params,
                                                                       s.device)))
        tol = WEAK_ORDER_TOL
        how = (f"Monte Carlo, {WEAK_SAMPLES} samples: not affine in x_T and noise on this "
               f"problem")
        shown = ", ".join(f"{e:.3g} ± {se:.1g}" for e, se in zip(errors, ses))
    what = (f"weak error (E|x|^2 on a Gaussian under VP, {counts} uniform steps to t = "
            f"{ORDER_T_END}; {how}: {shown})")
    if declared == 0:
        return _check_bias(WEAK_ORDER_STEPS, errors, ses, what)
    resolved = [(n, abs(e)) for n, e, se in zip(WEAK_ORDER_STEPS, errors, ses)
                if _resolved(e, se)]
    if len(resolved) < 2:
        return (f"weak error indistinguishable from 0 at all but {len(resolved)} of "
                f"{counts} steps: too small to fit, consistent with order {declared:g} "
                f"({how}: {shown})")
    fitted = fitted_order(*zip(*resolved))
    if fitted < declared - tol:
        (coarse, e_coarse), (fine, e_fine) = resolved[-2:]
        last = fitted_order((coarse, fine), (e_coarse, e_fine))
        advice = (f"declare order={round(fitted)}" if round(fitted) >= 1 else
                  "its error does not fall as steps are added: fix the scheme")
        if last <= BIAS_SLOPE:
            advice = (f"its error levels off (h^{last:.2f} from {coarse} to {fine} steps): "
                      f"declare order=0 if the scheme has a fixed bias, else {advice}")
        raise _Fail(f"declares order {declared:g} but its {what} falls like "
                    f"h^{fitted:.2f} (allowed {tol} below the declared order); {advice}")
    return f"weak error falls like h^{fitted:.2f} (declared {declared:g}; {how}: {shown})"


def _resolved(error: float, standard_error: float) -> bool:
    """Told apart from 0: beyond Monte Carlo noise, or beyond float64 rounding."""
    return abs(error) > max(WEAK_RESOLUTION * standard_error, ROUNDING)


def _check_bias(counts: tuple[int, ...], errors: list[float], ses: list[float],
                what: str) -> str:
    """Order 0: the error at the most steps is resolved, and it falls by less than
    h^BIAS_SLOPE from the step count before."""
    (coarse, e_coarse), (fine, e_fine) = zip(counts[-2:], errors[-2:])
    claim = "declares order 0 (a fixed bias: the error does not vanish)"
    if not _resolved(e_fine, ses[-1]):
        raise _Fail(f"{claim} but its {what} is indistinguishable from 0 at {fine} steps; "
                    f"declare the order it converges with")
    slope = (fitted_order((coarse, fine), (abs(e_coarse), abs(e_fine))) if e_coarse
             else -math.inf)
    if slope > BIAS_SLOPE:
        raise _Fail(f"{claim} but its {what} still falls like h^{slope:.2f} from {coarse} "
                    f"to {fine} steps (a fixed bias: at most h^{BIAS_SLOPE}); declare the "
                    f"order it converges with, about {max(round(slope), 1)}")
    return (f"error does not vanish (declared order 0): h^{slope:.2f} from {coarse} to "
            f"{fine} steps; {what}")


def check_convergence(s: _Setup) -> str:
    """Moments and sliced W2 of the samples match the exact mixture's (VP and EDM)."""
    _needs_no_guidance(s)
    found = []
    for process in PROCESSES:
        model, exact = kit_oracle(process, device=s.device), kit_oracle(process)
        grid = make_grid(model.sde, s.schedule, s.steps)
        out = generate(model, s.sampler, grid, 0, range(s.samples), s.params).double().cpu()
        where = f"on the 64-D mixture under {process.upper()} ({s.steps} {s.schedule} steps)"
        if not torch.isfinite(out).all():
            raise _Fail(f"{where}: NaN/Inf in the output")
        mean, cov = exact.moments()
        big = exact.sample_clean(20 * s.samples, torch.Generator().manual_seed(1))
        centred = big - mean
        # Standard errors of the sample mean and covariance at this sample size.
        se_mean = math.sqrt(float(cov.trace()) / s.samples)
        # E |v v^T - C|_F^2 = E |v|^4 - 2 E v^T C v + |C|_F^2 for v = x - mean.
        spread = (centred.pow(2).sum(1).pow(2).mean()
                  - 2 * ((centred @ cov) * centred).sum(1).mean() + cov.pow(2).sum())
        se_cov = math.sqrt(float(spread) / s.samples)
        z_mean = float((out.mean(0) - mean).norm()) / se_mean
        z_cov = float((torch.cov(out.T) - cov).norm()) / se_cov
        for what, z in (("mean", z_mean), ("covariance", z_cov)):
            if not z <= MOMENT_Z:
                raise _Fail(f"{where}: the sample {what} is {z:.2f} standard errors from the "
                            f"exact one (allowed {MOMENT_Z}; exact samples sit near 1)")
        gen = torch.Generator().manual_seed(2)
        directions = torch.randn(64, 256, generator=gen, dtype=torch.float64)
        directions /= directions.norm(dim=0)
        ref, other = big[: s.samples], big[s.samples: 2 * s.samples]
        floor = _sliced_w2(other, ref, directions)
        dist = _sliced_w2(out, ref, directions)
        if not dist <= floor * (1 + SW_MARGIN):
            raise _Fail(f"{where}: sliced W2 to exact samples {dist:.4f} exceeds the exact-"
                        f"vs-exact floor {floor:.4f} by more than {SW_MARGIN:.0%}")
        found.append(f"{process}: z(mean) {z_mean:.2f}, z(cov) {z_cov:.2f}, "
                     f"SW2 {dist:.4f} (floor {floor:.4f})")
    return "; ".join(found)


CHECKS: dict[str, Callable[[_Setup], str]] = {
    "registration": check_registration, "documentation": check_documentation,
    "parameters": check_parameters, "output": check_output, "seed": check_seed,
    "batch": check_batch, "nfe": check_nfe, "capabilities": check_capabilities,
    "model": check_model, "final_step": check_final_step, "order": check_order,
    "convergence": check_convergence,
}


def check_sampler(sampler: Union[Sampler, str], params: Union[Params, Mapping, None] = None,
                  *, checks: Optional[Iterable[str]] = None, device: Any = "cpu",
                  steps: int = 100, samples: int = 2000, schedule: str = "karras",
                  guidance: Optional[float] = None,
                  raise_on_failure: bool = True) -> ConformanceReport:
    """Run the conformance checks on a sampler (an object or a registered name).

    Args:
        params: hyperparameters (a mapping or the sampler's `Params`); default: defaults.
        checks: names from `CHECKS` to run (default: all, in order).
        device: where the oracle, the state and the noise live.
        steps, samples, schedule: the budget of the convergence check.
        guidance: run the checks on a guided model (classifier-free guidance at this
            scale, towards per-sample labels, on the class-conditional 64-D oracle), as a
            guided trial runs the sampler; order and convergence, measured against the
            unguided oracle's exact distribution, are skipped.
        raise_on_failure: raise `ConformanceError` if a check fails (else just report).
    """
    if isinstance(sampler, str):
        sampler = get_plugins().samplers.get(sampler)
    wanted = list(CHECKS) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; available: {', '.join(CHECKS)}")
    report = ConformanceReport(getattr(sampler, "name", repr(sampler)))
    if not isinstance(sampler, Sampler):
        fatal = f"expected a harness.Sampler, got {type(sampler).__name__}"
    else:
        try:
            fatal, params = "", (params if isinstance(params, Params)
                                 else sampler.make_params(params))
        except Exception as err:
            fatal = f"params do not validate: {err}"
    if fatal:
        report.results.append(CheckResult("registration", "failed", fatal))
        wanted = [name for name in wanted if name != "registration"]
    setup = _Setup(sampler, params, torch.device(device), steps, samples, schedule,
                   guidance=guidance)
    # The kit's tensors are small: one CPU thread is as fast as several on an idle machine
    # and many times faster on a busy one, where threads of one op wait for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_checks(setup, wanted, report)
    finally:
        torch.set_num_threads(threads)
    if raise_on_failure and report.failures:
        raise ConformanceError(report)
    return report


#: Failures that say nothing about the sampler's output: they do not hold back the
#: expensive checks.
NOT_BLOCKING = ("documentation",)


def _run_checks(setup: _Setup, wanted: list[str], report: ConformanceReport) -> None:
    for name in wanted:
        failed = {r.name for r in report.failures}
        if "registration" in failed:  # the sampler cannot be run as the harness runs it
            report.results.append(CheckResult(name, "skipped", "needs a sampler the "
                                              "harness can run (see registration)"))
            continue
        if name == "batch" and "seed" in failed:
            report.results.append(CheckResult(name, "skipped", "needs a sampler that "
                                              "reproduces its own output (see seed)"))
            continue
        if name in ("order", "convergence") and failed - set(NOT_BLOCKING):
            report.results.append(CheckResult(name, "skipped", "fix the failures above "
                                              "first"))
            continue
        start = time.perf_counter()
        try:
            status, message = "passed", CHECKS[name](setup)
        except _Fail as err:
            status, message = "failed", str(err)
        except _Skip as err:
            status, message = "skipped", str(err)
        except _Warn as err:
            status, message = "warning", str(err)
        except Exception as err:  # a crash is a failure of that check, not of the kit
            status, message = "failed", f"raised {type(err).__name__}: {err}"
        report.results.append(CheckResult(name, status, message,
                                          time.perf_counter() - start))


def conformance_test(*samplers: Union[Sampler, str], **options: Any) -> Callable:
    """A pytest test function running `check_sampler` on each sampler, one case each.

    With no samplers, every registered sampler (so new plugins are covered). Assign it
    to a module-level name starting with ``test_``; `options` go to `check_sampler`.
    """
    import pytest  # only needed here: the rest of the kit works without pytest

    chosen = list(samplers) or get_plugins().samplers.names()
    ids = [getattr(s, "name", s) for s in chosen]

    @pytest.mark.parametrize("sampler", chosen, ids=ids)
    def test_sampler_conformance(sampler):
        report = check_sampler(sampler, **options)
        for result in report.results:  # in pytest's warnings summary, where it is read
            if result.status == "warning":
                warnings.warn(f"sampler {report.sampler!r}: [{result.name}] "
                              f"{result.message}", stacklevel=1)
        print(report)  # shown by pytest -rP or -s

    return test_sampler_conformance
