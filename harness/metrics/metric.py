"""What a metric is: a named measurement with a unit and a direction, computed per trial.

Metrics are plugins (hook `harness_register_metrics`). The runner prepares each metric
once per suite (e.g. reference statistics) and then calls `compute` once per trial with
a `TrialContext`; a metric returns one or more named values. Metrics measure; they do
not log, time or decide devices — the runner does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..core.model import ScoreModel
from ..core.sampler import Params, Sampler
from ..core.schedules import TimeGrid
from .bootstrap import Bootstrap


@dataclass
class SuiteContext:
    """What is shared by every trial of a suite; built once by the runner."""

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


@dataclass
class TrialContext:
    """One trial: a sampler with its params on a grid, and the samples it produced."""

    suite: SuiteContext
    sampler: Sampler
    params: Params
    grid: TimeGrid
    seed: int
    #: The generated samples, (N, *data.shape), on the CPU; all N on every process.
    samples: Tensor
    #: Generates more samples of this trial on demand: f(indices) -> tensor.
    generate: Optional[Callable[[list[int]], Tensor]] = None
    #: Index sets shared by every trial with this N (`harness.metrics.bootstrap`): a set
    #: metric records its value on each (`bootstrap.record`) for intervals and paired
    #: comparisons between samplers. None when nothing is to be resampled.
    bootstrap: Optional[Bootstrap] = None


class Metric(ABC):
    """A measurement of a trial. Subclasses set the class attributes and `compute`."""

    #: Unique name; also the key of the main value in `compute`'s result.
    name: str
    #: Unit of the main value, e.g. "bits/dim", "nats", "FID", "NFE", "s".
    unit: str
    higher_is_better: bool
    description: str = ""
    #: The value depends only on the set of samples, not on the sampler that made them
    #: (FID, KID, two-sample distances): the runner also computes it on held-out real
    #: data of the same size, the floor row of the report (`harness.bench.floor`).
    on_real_data: bool = False

    def applies_to(self, suite: SuiteContext) -> bool:
        """Whether this metric can be computed for the suite's model (default: yes)."""
        return True

    def prepare(self, suite: SuiteContext) -> None:
        """Once-per-suite work (reference statistics, test data); default: nothing."""

    @abstractmethod
    def compute(self, trial: TrialContext) -> dict[str, float]:
        """Values for this trial: at least {self.name: value}; extras like
        f"{self.name}_stderr" may follow."""

    def params(self) -> dict[str, Any]:
        """Conventions to log with the values (units, estimator, sample counts...)."""
        return {}
