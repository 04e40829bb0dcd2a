"""The metric contract: what a metric declares, what it is given, and what it returns.

A metric is an instance of a `Metric` subclass, registered through the hook
`harness_register_metrics` (built-in and third-party metrics alike). It declares

* `name`: unique among metrics; the key of its main value and the prefix of its others;
* `unit`: the unit of the main value ("FID", "bits/dim", "nats", "s", "1" for a number);
* `higher_is_better`: the direction tables and plots rank by;
* `per_suite`: False (the default) for a measurement of a trial's samples; True for a
  property of the model alone (e.g. its test NLL), computed once per suite.

The runner, once per suite: `applies_to(suite)` (a metric that does not apply to the
model is left out and said so), then `prepare(suite)` (reference statistics, test data).
Then `compute(trial)` once per trial (per-trial metrics) or once for the suite
(per-suite metrics, whose trial has no sampler, grid or samples: read `trial.suite`).
`compute` returns finite floats, keyed `name` and `name_<what>` (e.g. `fid_num_samples`);
`params()` returns the conventions to log beside them. A metric measures: it does not
log, time or choose devices; costly one-time work is announced through
`suite.announce(line)`. It is given the bare model: the runner counts a trial's network
evaluations on a wrapper of its own (`harness.core.counting`), which a metric's
evaluations never reach.

Under torchrun every process runs every metric, and `trial.samples` holds all of the
trial's samples on every process, in index order: a metric written for one process gives
the same value on each, and only rank 0's values are recorded. To share the work out
instead, a metric uses `local_rows(samples)` (this process's share; `world_size()`
says how many processes share them), combines with
`all_reduce_sum` (a float64 sum over processes) or `gather_concat` (rows back in index
order), and wraps its local work in `shared_failure()` so that a failure on one process
stops them all rather than leaving the others waiting in a collective. Every process must
reach every collective, and none may run inside an adaptive solver (processes make
different numbers of steps). These work unchanged in a single process; they are
`harness.core.distributed`'s, re-exported as the public surface for metrics. A metric
of the samples' features reads them from `trial.features(extractor, postprocess)`: each
process extracts its own share once per trial and feature space, whatever the number of
metrics that read them.

A streamed trial (the suite's `stream`) never holds all of its samples: each batch goes,
as it is drawn, through the extractors of every feature space the metrics declare
(`feature_spaces`), and only the first samples are kept, as many as the metrics declare
they read (`samples_read`). A metric that would read every sample is refused there
before anything runs: no value is ever computed on fewer samples than were recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ..core.distributed import (
    all_reduce_sum,
    gather_concat,
    local_rows,
    shared_failure,
    world_size,
)
from ..core.guidance import guided
from ..core.model import ScoreModel
from ..errors import ParameterError
from ..core.sampler import Params, Sampler
from ..core.schedules import TimeGrid
from .bootstrap import Bootstrap
from .trial_features import SampleFeatures, TrialFeatures

__all__ = ["Metric", "SuiteContext", "TrialContext", "all_reduce_sum", "gather_concat",
           "local_rows", "shared_failure", "untrained_refusal", "world_size"]


@dataclass
class SuiteContext:
    """What is shared by every trial of a suite; built once by the runner."""

    #: The suite's model; `model.reference_data(...)` and `model.feature_extractor(...)`
    #: give what a metric compares samples with.
    model: ScoreModel
    model_name: str
    device: Any
    #: The dtype of the sampler's state (the suite's `dtype`); a network configured to
    #: compute in another precision does not change it (`harness.models.precision`).
    dtype: Optional[torch.dtype] = None
    #: Options from the suite for each metric, keyed by metric name.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A cache any metric may use for once-per-suite work (keyed by its own names).
    cache: dict[str, Any] = field(default_factory=dict)
    #: Tells the user, in one line, of costly one-time work before it starts and when it
    #: ends (e.g. reference solves): the runner prints it unless the run is quiet.
    announce: Callable[[str], None] = field(default=lambda line: None)


@dataclass
class TrialContext:
    """One trial: a sampler with its params on a grid, and the samples it produced.

    For a per-suite metric the runner passes `sampler`, `params` and `grid` as None and
    no samples; for the real-data floor (metrics with `on_real_data`) it passes them as
    None with held-out real samples in `samples`.
    """

    suite: SuiteContext
    sampler: Sampler
    params: Params
    grid: TimeGrid
    seed: int
    #: The generated samples, (N, *data.shape), on the CPU; all N on every process
    #: (in a streamed trial the first `Metric.samples_read` of them: `streamed`).
    samples: Tensor
    #: Generates more samples of this trial on demand: f(indices) -> tensor.
    generate: Optional[Callable[[list[int]], Tensor]] = None
    #: Index sets shared by every trial with this N (`harness.metrics.bootstrap`): a set
    #: metric records its value on each (`bootstrap.record`) for intervals and paired
    #: comparisons between samplers. None when nothing is to be resampled.
    bootstrap: Optional[Bootstrap] = None
    #: Each sample's intended class, (N,) int64 on the CPU, in index order, for a trial
    #: of a conditional model under guidance; None otherwise (`harness.core.labels`).
    labels: Optional[Tensor] = None
    #: The guidance scale w of the trial (1: purely conditional; 0: unconditional);
    #: None for an unguided trial.
    guidance: Optional[float] = None
    #: In a streamed trial, the features of every declared feature space, keyed by
    #: (extractor sha256, postprocess), extracted as the batches were drawn
    #: (`harness.metrics.streamed_features`); `samples` then holds only the first
    #: samples, as many as the metrics read (`Metric.samples_read`). None otherwise.
    streamed: Optional[dict[tuple[str, str], SampleFeatures]] = None
    #: The samples' features in each feature space asked for so far (`features`); made
    #: on first use, never passed in.
    feature_cache: TrialFeatures | None = field(default=None, init=False, repr=False,
                                                compare=False)

    def features(self, extractor: nn.Module, postprocess: str = "clamp") -> SampleFeatures:
        """The samples' features in `extractor`'s space, the samples first clamped or
        quantised as `postprocess` says (`harness.feature_space.postprocess`): extracted
        by the first metric of the trial that asks, read by the others
        (`harness.metrics.trial_features`). Under torchrun each process extracts its
        own share; `.stats` (float64 moments) and `.matrix` (every sample's features,
        in index order) are the same on every process."""
        if self.feature_cache is None:
            self.feature_cache = TrialFeatures(self.samples, self.suite.model,
                                               self.streamed)
        return self.feature_cache.get(extractor, postprocess)

    def guide(self, model: ScoreModel, indices: Sequence[int]) -> ScoreModel:
        """The model the trial's sampler ran on, for samples `indices`: `model` (the
        suite's model, or a copy of it, e.g. in float64) guided towards those samples'
        labels at the trial's scale; `model` itself for an unguided trial. A metric that
        re-integrates a trial's trajectories (an ODE reference) evaluates this one."""
        if self.guidance is None or self.labels is None:
            return model
        labels = self.labels[torch.as_tensor(list(indices), dtype=torch.int64)]
        return guided(model, labels.to(model.device), self.guidance)


class Metric(ABC):
    """A measurement of a trial. Subclasses set the class attributes and `compute`."""

    #: Unique name; also the key of the main value in `compute`'s result.
    name: str
    #: Unit of the main value, e.g. "bits/dim", "nats", "FID", "NFE", "s", "1".
    unit: str
    #: Whether a larger main value is better (False for distances and NLL).
    higher_is_better: bool
    #: One line for `harness plugins` and the logs.
    description: str = ""
    #: True for a property of the model alone: computed once per suite, from a trial
    #: without sampler or samples, and repeated beside every trial.
    per_suite: bool = False
    #: The value depends only on the set of samples, not on the sampler that made them
    #: (FID, KID, two-sample distances): the runner also computes it on held-out real
    #: data of the same size, the floor row of the report (`harness.bench.running.floor`).
    on_real_data: bool = False
    #: The options a suite may set under `[metrics.NAME]`, with their defaults: others
    #: are refused, by `options` and by suite validation before any compute. None: the
    #: metric reads `suite.options[name]` itself and checks what it finds.
    DEFAULTS: Optional[dict[str, Any]] = None
    #: Whether the value means something only on a trained network: a distance to data,
    #: a likelihood, a sampler's error on the model's distribution. Such a metric is
    #: refused on a benchmark-only model (`ScoreModel.trained` False); a metric of cost
    #: alone (time, memory, evaluations) sets False.
    needs_trained_model: bool = True

    def options(self, suite: SuiteContext) -> dict[str, Any]:
        """This metric's options for the suite: `DEFAULTS` overridden by the suite's
        `[metrics.NAME]` table, an unknown key refused with the known ones listed."""
        given = dict(suite.options.get(self.name, {}))
        if self.DEFAULTS is None:
            return given
        unknown = sorted(set(given) - set(self.DEFAULTS))
        if unknown:
            raise ParameterError(f"metric {self.name!r}: unknown option(s) "
                                 f"{', '.join(unknown)}; known: {', '.join(self.DEFAULTS)}")
        return {**self.DEFAULTS, **given}

    def applies_to(self, suite: SuiteContext) -> bool:
        """Whether this metric can be computed for the suite's model (default: yes)."""
        return True

    def prepare(self, suite: SuiteContext) -> None:
        """Once-per-suite work (reference statistics, test data); default: nothing."""

    @abstractmethod
    def compute(self, trial: TrialContext) -> dict[str, float]:
        """Values for this trial: at least {self.name: value}; extras like
        f"{self.name}_stderr" may follow. Every value a finite float."""

    def params(self) -> dict[str, Any]:
        """Conventions to log with the values (units, estimator, sample counts...)."""
        return {}

    def feature_spaces(self, suite: SuiteContext) -> list[tuple[nn.Module, str]]:
        """The (extractor, postprocess) pairs `compute` reads through `trial.features`,
        after `prepare`: a streamed trial extracts exactly these as its batches are
        drawn, and refuses any other (default: none)."""
        return []

    def samples_read(self, suite: SuiteContext) -> Optional[int]:
        """How many of a trial's samples, the first in index order, `compute` reads from
        `trial.samples`: 0 for a metric of features alone, None (the default, the safe
        assumption) for all of them. A streamed trial holds only the most any metric
        declares; a metric that reads them all is refused there before anything runs."""
        return None


def untrained_refusal(model: str, asked: Iterable[Metric], installed: Iterable[Metric]
                      ) -> Optional[str]:
    """Why the metrics `asked` cannot run on `model`, a benchmark-only model with untrained
    weights (`ScoreModel.trained` False), or None when none of them needs a trained one.

    Its samples are those of random weights: a distance to data, a likelihood or a
    sampler's error on its distribution would be a number that stands for nothing.
    """
    refused = [m.name for m in asked if m.needs_trained_model]
    if not refused:
        return None
    allowed = ", ".join(m.name for m in installed if not m.needs_trained_model)
    verb = "is" if len(refused) == 1 else "are"
    return (f"model {model!r} has untrained (random) weights, kept to measure speed: "
            f"metrics of sample quality or likelihood mean nothing on it, so "
            f"{', '.join(refused)} {verb} refused. Allowed: metrics of cost alone "
            f"({allowed or 'none installed'}); every trial records its NFE, wall-clock, "
            f"network time, overhead and samples/s without any metric")
