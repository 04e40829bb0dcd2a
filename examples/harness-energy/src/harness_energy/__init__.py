"""harness-energy: the energy distance to the model's reference data, as a harness metric.

The harness finds this module through the ``harness`` entry-point group declared in this
distribution's ``pyproject.toml`` and calls its hook once when it loads its plugins.
"""

from __future__ import annotations

import torch

from harness import (Metric, ParameterError, SuiteContext, TrialContext, all_reduce_sum,
                     hookimpl, local_rows, shared_failure)

__version__ = "0.1.0"

#: The harness hook API this plugin is written for; another major version refuses it.
harness_api_version = 1


def distance_sum(x: torch.Tensor, y: torch.Tensor, block: int = 1024) -> float:
    """sum_ij |x_i - y_j| in float64, a block of rows at a time (bounded memory).

    Without the matrix-product shortcut, whose cancellation would make |x - x| > 0.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    exact = "donot_use_mm_for_euclid_dist"
    return sum(float(torch.cdist(x[i:i + block], y, compute_mode=exact).sum())
               for i in range(0, len(x), block))


class EnergyDistance(Metric):
    """Energy distance (Szekely & Rizzo 2013) of the samples to the model's reference
    data: 2 E|X - Y| - E|X - X'| - E|Y - Y'| over the two empirical distributions."""

    name = "energy"
    unit = "energy"
    higher_is_better = False
    description = "energy distance to the model's reference data (lower is better)"
    DEFAULTS = {"split": "test", "num_reference": 2000, "seed": 0}

    def applies_to(self, suite: SuiteContext) -> bool:
        return bool(suite.model.reference_splits)  # only models with reference data

    def prepare(self, suite: SuiteContext) -> None:
        given = suite.options.get(self.name, {})
        if set(given) - set(self.DEFAULTS):
            raise ParameterError(f"metric 'energy': unknown option(s) "
                                 f"{sorted(set(given) - set(self.DEFAULTS))}; known: "
                                 f"{', '.join(self.DEFAULTS)}")
        opts = {**self.DEFAULTS, **given}
        ref = suite.model.reference_data(opts["split"], opts["num_reference"], opts["seed"])
        # E|Y - Y'| does not depend on the trial: once per suite.
        suite.cache[self.name] = (ref.data, distance_sum(ref.data, ref.data) / len(ref.data)**2)
        self.logged = {"energy_reference": ref.data_id, "energy_estimator": "V-statistic"}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        y, yy = trial.suite.cache[self.name]
        x = trial.samples  # all of the trial's samples, on every process
        with shared_failure():  # under torchrun each process sums over its own rows
            mine = local_rows(x)
            sums = torch.tensor([distance_sum(mine, y), distance_sum(mine, x)],
                                dtype=torch.float64)
        xy, xx = all_reduce_sum(sums).tolist()  # the sums over every process's rows
        n, m = len(x), len(y)
        return {"energy": 2 * xy / (n * m) - xx / n**2 - yy,
                "energy_num_samples": float(n), "energy_num_reference": float(m)}

    def params(self) -> dict[str, str]:
        return dict(getattr(self, "logged", {}))


@hookimpl
def harness_register_metrics(register):
    register(EnergyDistance())
