"""A metric that evaluates the model many times, in `prepare` and in every `compute`: the
runner must record the trial's NFE as the sampler spent it, whatever a metric does.

It calls every evaluating method of the model it is given (`denoise`, `score`,
`ode_drift`, and `denoise_labelled` on a conditional model) and draws extra samples
through `trial.generate`, and it counts its own evaluations through its own wrapper, as
a metric that reports an NFE does; `evaluates_the_model_rows` says how many rows it ran,
so a test can see that the evaluations happened.

Loaded with `harness.plugin.manager.load_plugins(extra=[("evaluating_metric", module)])`.
"""

from __future__ import annotations

import torch

from harness import CountedModel, Metric, SuiteContext, TrialContext, hookimpl

harness_api_version = 1

#: Evaluations of each kind per `prepare` and per `compute`.
REPEATS = 7


def evaluate_everything(model, rows: int) -> CountedModel:
    """`REPEATS` evaluations of every kind on `rows` rows, counted by a wrapper of its own."""
    counted = CountedModel(model)
    x = torch.zeros((rows, *model.data.shape), dtype=model.dtype, device=model.device)
    t = 0.5 * model.sde.T
    with torch.no_grad():
        for _ in range(REPEATS):
            counted.denoise(x, float(model.sde.sigma(t)))
            counted.score(x, t)
            counted.ode_drift(x, t)
            if model.num_classes:
                counted.denoise_labelled(x, 1.0, torch.zeros(rows, dtype=torch.int64,
                                                             device=model.device))
    return counted


class EvaluatesTheModel(Metric):
    name = "evaluates_the_model"
    unit = "1"
    higher_is_better = False
    description = "evaluates the model in prepare and compute; reports the rows it ran"

    def prepare(self, suite: SuiteContext) -> None:
        evaluate_everything(suite.model, rows=3)

    def compute(self, trial: TrialContext) -> dict[str, float]:
        counted = evaluate_everything(trial.suite.model, rows=len(trial.samples))
        extra = trial.generate(range(4))  # more samples, by the trial's own sampler
        return {self.name: float(extra.abs().mean()),
                f"{self.name}_rows": float(counted.nfe.rows)}


@hookimpl
def harness_register_metrics(register):
    register(EvaluatesTheModel())
