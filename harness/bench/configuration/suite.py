"""Benchmark suites: TOML files that say what to run, resolved into a flat list of trials.

A suite names the model, the samplers with hyperparameter grids, the step budgets, the
sample counts, metrics with their options, seeds, the device and the thread count:

    experiment = "digits"
    model = "digits"
    schedule = "karras"             # or ["karras", {name = "log_snr"}]: one trial each
    nfe = [10, 20, 35, 50, 100]     # budgets; or `steps = [...]`
    seeds = [0, 1]
    num_samples = 500

    [samplers.heun]                 # steps chosen so that the counted NFE ~ each budget
    [samplers.langevin.params]
    S_churn = [0.0, 10.0]           # lists expand to a Cartesian product

    [metrics.nll]
    num_points = 64

`harness schema` prints the JSON Schema of these files, with the installed samplers'
hyperparameters, for editors to complete and check them.

This module is the one import for all of it; each idea lives in its own module:

* `suite_schema`: what a file may say (pydantic), the validated `Suite`, `build_suite`;
* `suite_jsonschema`: the same rules as a JSON Schema;
* `suite_files`: finding and reading suite files, command-line overrides, `load_suite`;
* `trials`: expanding a suite into `Trial`s (NFE budgets to steps, names, hashes);
* `canonical`: configuration hashes, weight hashes, flat keys.

Everything is validated before any compute. A trial is one (sampler, hyperparameters,
schedule, steps, seed). Its configuration hash is the sha256 of the canonical JSON of everything
that determines its result, the versions of the harness and of the plugins that provide
its sampler, model and metrics included (`harness.bench.configuration.code_identity`), which is what
`--resume` matches on.
"""

from __future__ import annotations

from .canonical import canonical_hash, flatten, model_identity, weights_hash
from .suite_files import (DEFAULT_SUITE, SUITES_DIR, apply_overrides, load_suite,
                          packaged_suites, parse_list, parse_value, read_toml, suite_path)
from .suite_schema import (DEVICES, DTYPES, MAX_NFE, MAX_NUM_SAMPLES, MAX_SEED, MAX_STEPS,
                           MAX_THREADS, MAX_TRIALS, NETWORK_DTYPES, SamplerEntry, Suite,
                           SuiteError, SuiteFile, build_suite, check_conditional,
                           check_trained, default_threads)
from .trials import (Trial, network_config, resolve_trials, short_value, steps_for_budget,
                     trial_name)

__all__ = [
    "DEFAULT_SUITE", "DEVICES", "DTYPES", "MAX_NFE", "MAX_NUM_SAMPLES", "MAX_SEED",
    "MAX_STEPS", "MAX_THREADS", "MAX_TRIALS", "NETWORK_DTYPES", "SUITES_DIR", "SamplerEntry",
    "Suite", "SuiteError", "SuiteFile", "Trial", "apply_overrides", "build_suite",
    "canonical_hash", "check_conditional", "check_trained", "default_threads", "flatten",
    "load_suite", "model_identity", "network_config", "packaged_suites", "parse_list",
    "parse_value", "read_toml", "resolve_trials", "short_value", "steps_for_budget",
    "suite_path", "trial_name", "weights_hash",
]
