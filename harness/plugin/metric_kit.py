"""The conformance kit for metrics: what a metric must do before its numbers are logged.

Public through `harness.testing`::

    from harness.testing import check_metric
    print(check_metric(MyMetric))           # a class, an instance or a registered name

The checks run in the order of `METRIC_CHECKS`, on the exact 2-D ring oracle unless a
model is given, with samples from the built-in `heun` sampler, and each reports only
what it names:

* `declaration`: `name`, `unit`, `higher_is_better`, `per_suite` and `description`
  declared with the right types;
* `values`: `compute` returns finite floats keyed `name` and `name_<what>`;
* `repeatable`: the same samples give the same values, in a fresh suite and again in the
  same one (the global generator is seeded before each call, as the runner does);
* `scope`: a per-trial metric changes with the trial (its samples, its grid); a per-suite
  metric computes from the runner's per-suite trial (no sampler, no samples) the value
  it gives for any trial.

For a class-conditional model (`num_classes > 0`) the kit's trials carry labels, as the
runner's guided trials do: sample i's intended class is the balanced label of
`harness.core.labels` for seed 0 (`trial.labels`). The samples themselves are drawn
unconditionally: the checks judge a metric's contract, not the model.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..core.labels import sample_labels
from ..core.model import ScoreModel
from ..core.sampling import generate
from ..core.schedules import make_grid
from ..core.sde import make_sde
from ..errors import ParameterError
from ..metrics.metric import Metric, SuiteContext, TrialContext, untrained_refusal
from ..models.oracle import ring_2d
from .check_report import CheckReport, CheckResult, KitFailure
from .manager import get_plugins

#: A metric's name: also the prefix of its value keys and of its MLflow metrics.
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]*"
#: The sampler that draws the kit's samples, and the step counts of its two trials.
SAMPLER = "heun"
STEPS = (16, 8)
#: How far the second trial's samples are moved from the first's, in every coordinate.
SHIFT = 1.0


class MetricConformanceError(KitFailure):
    """A metric failed the kit; `report` has every check's result."""


@dataclass
class MetricReport(CheckReport):
    """The result of `check_metric`: one `CheckResult` per check, in order."""

    KIND = "metric"
    metric: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.metric


class _Fail(Exception):
    """A check's verdict: the message says what is wrong and what to do."""


@dataclass
class _Setup:
    """The metric, its model and options, and two trials' worth of samples."""

    metric: Metric
    model: ScoreModel
    model_name: str
    options: dict[str, Any]
    samples: int
    drawn: dict[int, Tensor] = field(default_factory=dict)  # each trial's samples, once

    def suite(self) -> SuiteContext:
        """A fresh suite, as the runner builds one, with the metric prepared."""
        suite = SuiteContext(model=self.model, model_name=self.model_name, device="cpu",
                             options={self.metric.name: dict(self.options)})
        self.metric.prepare(suite)
        return suite

    def trial(self, suite: SuiteContext, which: int = 0) -> TrialContext:
        """Trial 0: heun at STEPS[0]; trial 1: heun at STEPS[1], samples moved by SHIFT."""
        sampler = get_plugins().samplers.get(SAMPLER)
        grid, params = make_grid(self.model.sde, "karras", STEPS[which]), sampler.make_params()

        def draw(indices: Iterable[int]) -> Tensor:
            with torch.no_grad():
                out = generate(self.model, sampler, grid, 0, list(indices), params)
            return (out + SHIFT * which).cpu()

        if which not in self.drawn:
            self.drawn[which] = draw(range(self.samples))
        labels = (sample_labels(0, range(self.samples), self.model.num_classes)
                  if self.model.num_classes else None)
        return TrialContext(suite=suite, sampler=sampler, params=params, grid=grid, seed=0,
                            samples=self.drawn[which].clone(), generate=draw, labels=labels)

    def compute(self, trial: TrialContext) -> Any:
        torch.manual_seed(0)  # what the runner does before a trial's metrics
        return self.metric.compute(trial)


def _number(value: Any) -> Optional[float]:
    """A value as a float when it is a real number (a 0-d tensor counts), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


#: How far two computations of one value on the same samples may differ: a
#: multi-threaded BLAS (MKL) may sum in another order from one call to the next, which
#: moves float64 results by ~1e-15 relative; an unseeded generator moves them by far more.
REPEAT_TOLERANCE = 1e-9


def _same(a: Any, b: Any) -> bool:
    """Equal value dicts, up to `REPEAT_TOLERANCE` relative (NaN equal to NaN, so that
    only `values` reports NaN)."""
    if not isinstance(a, Mapping) or not isinstance(b, Mapping) or set(a) != set(b):
        return a == b
    for key in a:
        x, y = _number(a[key]), _number(b[key])
        if x is None or y is None:
            if a[key] is not b[key] and a[key] != b[key]:
                return False
        elif not (math.isclose(x, y, rel_tol=REPEAT_TOLERANCE, abs_tol=1e-300)
                  or (math.isnan(x) and math.isnan(y))):
            return False
    return True


def _show(values: Any) -> str:
    if not isinstance(values, Mapping):
        return repr(values)
    shown = []
    for key, value in values.items():
        number = _number(value)
        shown.append(f"{key}: {number:.6g}" if number is not None else f"{key}: {value!r}")
    return "{" + ", ".join(shown) + "}"


# --- the checks -----------------------------------------------------------------------------

def check_declaration(s: _Setup) -> str:
    """name, unit, higher_is_better, per_suite and description, of the right types."""
    m = s.metric
    name = getattr(m, "name", None)
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise _Fail(f"name must be a string of letters, digits and '_' starting with a "
                    f"letter (it prefixes every value key), got {name!r}")
    unit = getattr(m, "unit", None)
    if not isinstance(unit, str) or not unit.strip():
        raise _Fail(f"unit must be a non-empty string (e.g. 'bits/dim', 'FID', '1' for a "
                    f"plain number), got {unit!r}")
    better = getattr(m, "higher_is_better", None)
    if not isinstance(better, bool):
        raise _Fail(f"higher_is_better must be declared True or False (tables rank by "
                    f"it), got {better!r}")
    if not isinstance(getattr(m, "per_suite", None), bool):
        raise _Fail(f"per_suite must be True or False, got {getattr(m, 'per_suite', None)!r}")
    description = getattr(m, "description", None)
    if not isinstance(description, str) or not description.strip():
        raise _Fail("description must be a one-line string (`harness plugins` shows it)")
    scope = "once per suite" if m.per_suite else "per trial"
    return (f"{name!r} in {unit!r}, {'higher' if better else 'lower'} is better, "
            f"computed {scope}")


def check_values(s: _Setup) -> str:
    """compute returns finite floats keyed `name` and `name_<what>`."""
    name = s.metric.name
    values = s.compute(s.trial(s.suite()))
    if not isinstance(values, Mapping) or not values:
        raise _Fail(f"compute returned {values!r}; it must return a dict of values with at "
                    f"least {name!r}")
    if name not in values:
        raise _Fail(f"compute returned keys {sorted(values)} without the metric's name "
                    f"{name!r}, which keys its main value")
    stray = [k for k in values if k != name and not str(k).startswith(name + "_")]
    if stray:
        raise _Fail(f"keys {stray} do not start with {name + '_'!r}: every value is keyed "
                    f"by the metric's name, so that metrics never overwrite each other's")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (float, int)):
            raise _Fail(f"{key} = {value!r} is a {type(value).__name__}; return Python "
                        f"floats (float(tensor))")
        if not math.isfinite(value):
            raise _Fail(f"{key} = {value!r}: every value must be finite (the runner fails "
                        f"the trial otherwise)")
    return f"{len(values)} finite float(s): {', '.join(values)}"


def check_repeatable(s: _Setup) -> str:
    """The same samples give the same values: twice in one suite, and in a fresh one."""
    suite = s.suite()
    trial = s.trial(suite)
    first = s.compute(trial)
    again = s.compute(s.trial(suite))
    fresh = s.compute(s.trial(s.suite()))
    for other, where in ((again, "again in the same suite"), (fresh, "in a fresh suite")):
        if not _same(first, other):
            raise _Fail(f"the same samples gave {_show(first)} and then, {where}, "
                        f"{_show(other)}: draw random numbers from a generator seeded by "
                        f"the options (or the global one, which the runner seeds per "
                        f"trial), and keep no state between calls")
    return "identical values for identical samples (to 1e-9 relative)"


def check_scope(s: _Setup) -> str:
    """per-trial: the value follows the trial; per-suite: it needs no sampler or samples."""
    if not s.metric.per_suite:
        suite = s.suite()
        first = s.compute(s.trial(suite, 0))
        second = s.compute(s.trial(suite, 1))
        if _same(first, second):
            raise _Fail(f"two different trials (heun at {STEPS[0]} and {STEPS[1]} steps, the "
                        f"second's samples moved by {SHIFT:g}) both gave {_show(first)}: a "
                        f"per-trial metric must measure the trial; a property of the model "
                        f"alone must declare per_suite = True")
        return "the value changes with the trial"
    suite = s.suite()
    runner_trial = TrialContext(suite=suite, sampler=None, params=None,  # type: ignore
                                grid=None, seed=0, samples=torch.empty(0))
    try:
        alone = s.compute(runner_trial)
    except Exception as err:
        raise _Fail(f"declares per_suite = True but fails on the runner's per-suite trial, "
                    f"which has no sampler, grid or samples ({type(err).__name__}: {err}); "
                    f"read only trial.suite") from None
    with_samples = s.compute(s.trial(s.suite(), 1))
    if not _same(alone, with_samples):
        raise _Fail(f"declares per_suite = True but gives {_show(alone)} for the suite and "
                    f"{_show(with_samples)} for a trial: its value depends on the trial")
    return "once per suite: the same value without sampler or samples"


METRIC_CHECKS: dict[str, Callable[[_Setup], str]] = {
    "declaration": check_declaration, "values": check_values,
    "repeatable": check_repeatable, "scope": check_scope,
}


def _resolve(metric: Union[Metric, type, str]) -> Metric:
    if isinstance(metric, str):
        return get_plugins().metrics.get(metric)
    if isinstance(metric, type):
        if not issubclass(metric, Metric):
            raise ParameterError(f"expected a harness.Metric subclass, got {metric.__name__}")
        return metric()
    if not isinstance(metric, Metric):
        raise ParameterError(f"expected a harness.Metric (class, instance or registered "
                             f"name), got {type(metric).__name__}")
    return metric


def check_metric(metric: Union[Metric, type, str], *, model: Optional[ScoreModel] = None,
                 options: Optional[Mapping[str, Any]] = None,
                 checks: Optional[Iterable[str]] = None, samples: int = 256,
                 raise_on_failure: bool = True) -> MetricReport:
    """Run the metric conformance checks (`METRIC_CHECKS`) on a metric.

    Args:
        metric: a `harness.Metric` subclass (instantiated without arguments), an
            instance, or the name of a registered metric.
        model: the model to measure on (default: the exact 2-D ring oracle under VP);
            the metric must apply to it (and not need a trained network when the
            model's weights are untrained, `ScoreModel.trained` False).
        options: the metric's suite options (what `[metrics.NAME]` would hold).
        checks: names from `METRIC_CHECKS` to run (default: all, in order).
        samples: samples per trial.
        raise_on_failure: raise `MetricConformanceError` if a check fails.
    """
    metric = _resolve(metric)
    wanted = list(METRIC_CHECKS) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in METRIC_CHECKS]
    if unknown:
        raise ParameterError(f"unknown checks {unknown}; available: {', '.join(METRIC_CHECKS)}")
    model = model if model is not None else ring_2d(make_sde("vp"))
    setup = _Setup(metric, model, type(model).__name__, dict(options or {}), int(samples))
    name = getattr(metric, "name", type(metric).__name__)
    if not model.trained:
        installed = (entry.item for _, entry in get_plugins().metrics.entries())
        why = untrained_refusal(setup.model_name, [metric], installed)
        if why is not None:
            raise ParameterError(f"check_metric: {why}")
    probe = SuiteContext(model=model, model_name=setup.model_name, device="cpu",
                         options={name: dict(setup.options)})
    if not metric.applies_to(probe):
        raise ParameterError(f"metric {name!r} does not apply to {setup.model_name}; pass "
                             f"model= a model it applies to")
    report = MetricReport(str(name))
    rng = torch.random.get_rng_state()
    try:
        for check in wanted:
            start = time.perf_counter()
            try:
                status, message = "passed", METRIC_CHECKS[check](setup)
            except _Fail as err:
                status, message = "failed", str(err)
            except Exception as err:  # a crash is a failure of that check, not of the kit
                status, message = "failed", f"raised {type(err).__name__}: {err}"
            report.results.append(CheckResult(check, status, message,
                                              time.perf_counter() - start))
    finally:
        torch.random.set_rng_state(rng)  # the caller's generator, as it was
    if raise_on_failure and report.failures:
        raise MetricConformanceError(report)
    return report


def metric_conformance_test(*metrics: Union[Metric, type, str], **options: Any) -> Callable:
    """A pytest test function running `check_metric` on each metric, one case each.

    Assign it to a module-level name starting with ``test_``; `options` go to
    `check_metric` (e.g. ``options={...}`` for the metric's suite options).
    """
    import pytest  # only needed here: the rest of the kit works without pytest

    if not metrics:
        raise ParameterError("name the metrics to check: each has its own options and cost")
    ids = [m if isinstance(m, str) else getattr(m, "name", repr(m)) for m in metrics]

    @pytest.mark.parametrize("metric", list(metrics), ids=ids)
    def test_metric_conformance(metric):
        print(check_metric(metric, **options))  # shown by pytest -rP or -s

    return test_metric_conformance
