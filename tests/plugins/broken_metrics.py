"""Metrics broken on purpose, each in one way that one check of the metric kit must name.

Every one of them is otherwise a correct metric (the mean distance of the samples from
the origin, or a variant), so that each fails only its own check:

* `forgets_direction` (declaration): no `higher_is_better`;
* `unkeyed_values` (values): a tensor for the main value and an unprefixed key;
* `private_generator` (repeatable): a generator made once and reused, so the same samples
  give another subsample on every call;
* `ignores_the_trial` (scope): a per-trial metric that measures the model's reference
  data, not the trial;
* `per_suite_reads_samples` (scope): declares `per_suite` but reads the samples.
"""

from __future__ import annotations

import torch

from harness import Metric, TrialContext, hookimpl

harness_api_version = 1


def mean_radius(samples: torch.Tensor) -> float:
    return float(samples.flatten(1).double().norm(dim=1).mean())


class _Radius(Metric):
    unit = "1"
    higher_is_better = False
    description = "mean distance of the samples from the origin"

    def compute(self, trial: TrialContext) -> dict[str, float]:
        return {self.name: mean_radius(trial.samples)}


class ForgetsDirection(Metric):
    name = "forgets_direction"
    unit = "1"
    description = "mean distance of the samples from the origin"

    def compute(self, trial: TrialContext) -> dict[str, float]:
        return {self.name: mean_radius(trial.samples)}


class UnkeyedValues(_Radius):
    name = "unkeyed_values"

    def compute(self, trial: TrialContext) -> dict[str, float]:
        radius = trial.samples.flatten(1).double().norm(dim=1)
        return {self.name: radius.mean(), "stderr": float(radius.std() / len(radius) ** 0.5)}


class PrivateGenerator(_Radius):
    name = "private_generator"

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)  # made once: the bug

    def compute(self, trial: TrialContext) -> dict[str, float]:
        n = len(trial.samples)
        half = torch.randperm(n, generator=self.generator)[:n // 2]
        return {self.name: mean_radius(trial.samples[half])}


class IgnoresTheTrial(_Radius):
    name = "ignores_the_trial"

    def compute(self, trial: TrialContext) -> dict[str, float]:
        return {self.name: mean_radius(trial.suite.model.reference_data("test", 500).data)}


class PerSuiteReadsSamples(_Radius):
    name = "per_suite_reads_samples"
    per_suite = True

    def compute(self, trial: TrialContext) -> dict[str, float]:
        return {self.name: mean_radius(trial.samples)}  # there are none once per suite


BROKEN = (ForgetsDirection, UnkeyedValues, PrivateGenerator,
          IgnoresTheTrial, PerSuiteReadsSamples)


@hookimpl
def harness_register_metrics(register):
    for cls in BROKEN:
        register(cls())
