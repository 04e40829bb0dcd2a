"""What the feature metrics of one trial cost: each metric's `compute`, timed.

    python benchmarks/feature_passes.py [--suite default|guided] [--repeats 3]

One trial of a packaged suite, as the runner measures it: the suite's model, its first
sampler at its smallest NFE budget (Heun-type samplers take the step count nearest to
it), its `num_samples` drawn once (guided: at the suite's second guidance scale, with
its labels), and every metric of the suite whose values come from sample features
(the rest, e.g. the NLL, are left out). The metrics are prepared once (reference
statistics from a fresh cache folder); then, `--repeats` times, a fresh trial (new
bootstrap index sets, no features kept from the previous repeat) is measured, each
metric's `compute` timed on its own, in the suite's order. Printed: the median seconds
per metric and in all, and each value, so that two versions of the code can be
compared number for number.

Written against the public API only, so that it runs unchanged on an older checkout
(put its folder first on PYTHONPATH, with `harness_plugins` linked to its plugins/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from harness import (
    Bootstrap,
    SuiteContext,
    TrialContext,
    generate,
    make_grid,
)
from harness.bench.configuration.suite_files import read_toml, suite_path
from harness.core.guidance import guided
from harness.core.labels import sample_labels
from harness.plugin.manager import get_plugins

#: The metrics that measure a trial's samples through a feature extractor.
FEATURE_METRICS = ("fid", "fid_inf", "kid", "class_fid", "precision", "recall")


def one_trial(name: str) -> tuple[str, dict, TrialContext]:
    """The sampler's name, the suite's feature metrics prepared, and one trial."""
    raw = read_toml(suite_path(name))
    plugins = get_plugins()
    model = plugins.models.get(raw["model"]).build(torch.device("cpu"))
    cache = tempfile.mkdtemp(prefix="feature-passes-")
    options = {metric: {**table, "cache_dir": cache}
               for metric, table in raw["metrics"].items() if metric in FEATURE_METRICS}
    suite = SuiteContext(model=model, model_name=raw["model"], device="cpu",
                         options=options)
    metrics = {}
    for metric in options:
        found = plugins.metrics.get(metric)
        if found.applies_to(suite):
            found.prepare(suite)
            metrics[metric] = found
    sampler_name = min(raw["samplers"])
    sampler = plugins.samplers.get(sampler_name)
    steps = max(2, min(raw["nfe"]) // 2)
    grid, params = make_grid(model.sde, raw["schedule"], steps), sampler.make_params()
    indices = range(raw["num_samples"])
    labels, scale = None, None
    if raw.get("guidance"):
        scale = raw["guidance"][min(1, len(raw["guidance"]) - 1)]
        labels = sample_labels(0, indices, model.num_classes, raw.get("labels", "balanced"))
    with torch.no_grad():
        samples = generate(guided(model, labels, scale), sampler, grid, 0, indices,
                           params=params)
    trial = TrialContext(suite=suite, sampler=sampler, params=params, grid=grid, seed=0,
                         samples=samples, labels=labels, guidance=scale)
    return sampler_name, metrics, trial


def measure(trial: TrialContext, metrics: dict) -> tuple[dict, dict]:
    """Seconds per metric and the values, on a fresh copy of `trial`."""
    fresh = TrialContext(suite=trial.suite, sampler=trial.sampler, params=trial.params,
                         grid=trial.grid, seed=trial.seed, samples=trial.samples,
                         labels=trial.labels, guidance=trial.guidance,
                         bootstrap=Bootstrap(trial.samples.shape[0]))
    seconds, values = {}, {}
    for name, metric in metrics.items():
        start = time.perf_counter()
        values.update(metric.compute(fresh))
        seconds[name] = time.perf_counter() - start
    return seconds, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sampler, metrics, trial = one_trial(args.suite)
    runs = [measure(trial, metrics) for _ in range(args.repeats)]
    print(f"suite {args.suite}: {sampler}, {trial.grid.steps} steps, "
          f"N = {trial.samples.shape[0]}, median of {args.repeats} repeats")
    for name in metrics:
        print(f"  {name:<10} {statistics.median(s[name] for s, _ in runs):8.3f} s")
    total = statistics.median(sum(s.values()) for s, _ in runs)
    print(f"  {'all':<10} {total:8.3f} s")
    for key, value in sorted(runs[-1][1].items()):
        print(f"  {key} = {value!r}")


if __name__ == "__main__":
    main()
