"""Plugins for the benchmark-runner tests: samplers that fail on purpose, a sampler with a
tripwire (interrupt, SIGTERM or any action on its n-th call), and two tiny metrics.

Loaded with `harness.plugin.manager.load_plugins(extra=[("bench_plugins", module)])`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from harness_plugins.euler import euler

from harness import Capabilities, Sampler, hookimpl
from harness.metrics.metric import Metric, SuiteContext, TrialContext

harness_api_version = 1


class Tripwire:
    """Counts sampler calls; on the `at`-th call runs `action` (then disarms)."""

    def __init__(self) -> None:
        self.calls = 0
        self.at: Optional[int] = None
        self.action: Optional[Callable[[], None]] = None

    def arm(self, at: int, action: Callable[[], None]) -> None:
        self.calls, self.at, self.action = 0, at, action

    def disarm(self) -> None:
        self.calls, self.at, self.action = 0, None, None

    def __call__(self) -> None:
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            action, self.at = self.action, None
            action()


TRIPWIRE = Tripwire()


def raising(model, x, grid, noise, callback, params):
    """Evaluates the model once, then fails like a buggy plugin would."""
    model.score(x, grid.t[0])
    raise RuntimeError("deliberate failure inside the sampler")


def nan_sampler(model, x, grid, noise, callback, params):
    """Returns NaN for every other sample, as a diverging integrator would."""
    out = euler(model, x, grid, noise, callback, params).clone()
    out[::2] = math.nan
    return out


def nan_for_sample_1(model, x, grid, noise, callback, params):
    """NaN for sample index 1 only: under torchrun, one process fails and the other not."""
    out = euler(model, x, grid, noise, callback, params).clone()
    out[torch.tensor([i == 1 for i in noise.indices])] = math.nan
    return out


def wrong_shape(model, x, grid, noise, callback, params):
    """Drops the last coordinate."""
    return euler(model, x, grid, noise, callback, params)[..., :-1]


def tripwire_euler(model, x, grid, noise, callback, params):
    """Euler, after giving the tripwire a chance to fire."""
    TRIPWIRE()
    return euler(model, x, grid, noise, callback, params)


def _sampler(name, fn):
    return Sampler(name=name, fn=fn, capabilities=Capabilities(stochastic=False, order=1),
                   citation="benchmark-runner tests")


@hookimpl
def harness_register_samplers(register):
    register(_sampler("raising", raising))
    register(_sampler("nan_sampler", nan_sampler))
    register(_sampler("nan_for_sample_1", nan_for_sample_1))
    register(_sampler("wrong_shape", wrong_shape))
    register(_sampler("tripwire_euler", tripwire_euler))


class MeanSquaredNorm(Metric):
    """Mean of |x|^2 over the samples (the ring oracle's true value is 1 + 2 * 0.1^2)."""

    name = "msn"
    unit = "1"
    higher_is_better = False

    def compute(self, trial: TrialContext) -> dict[str, float]:
        values = trial.samples.flatten(1).pow(2).sum(1)
        return {"msn": float(values.mean()),
                "msn_stderr": float(values.std() / math.sqrt(len(values)))}


class OrderProbe(Metric):
    """sum_i (i + 1) x_i: changes if the samples come back in another order."""

    name = "order_probe"
    unit = "1"
    higher_is_better = False

    def compute(self, trial: TrialContext) -> dict[str, float]:
        x = trial.samples.flatten(1).double()
        weights = torch.arange(1, len(x) + 1, dtype=torch.float64)
        return {"order_probe": float(weights @ x.sum(1))}


class FailingMetric(Metric):
    """Raises on every trial, as a broken metric plugin would."""

    name = "failing_metric"
    unit = "1"
    higher_is_better = False

    def compute(self, trial: TrialContext) -> dict[str, float]:
        raise ValueError("deliberate failure inside the metric")


class SuiteConstant(Metric):
    """A per-suite value, like the model's reference NLL: computed once per suite."""

    name = "suite_constant"
    unit = "1"
    higher_is_better = False
    per_suite = True
    calls = 0

    def prepare(self, suite: SuiteContext) -> None:
        type(self).calls = 0

    def compute(self, trial: Any) -> dict[str, float]:
        type(self).calls += 1
        return {"suite_constant": float(torch.tensor(2.5))}


@hookimpl
def harness_register_metrics(register):
    register(MeanSquaredNorm())
    register(OrderProbe())
    register(FailingMetric())
    register(SuiteConstant())
