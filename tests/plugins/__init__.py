"""Plugins used by the tests, each a small module loaded with `load_plugins(extra=...)`.

Samplers that register fine but break the contract, each of which the conformance kit
must reject with its own message: `ignores_score`, `wrong_nfe`, `batch_coupled_noise`,
`final_step_noise`. Plugins the loader must refuse while still loading the others:
`raises_on_import`, `wrong_signature`, `future_api_version`, `raises_in_register`,
`duplicate_name`. Metrics that each break the metric contract in one way, which the metric
kit must reject in the check that names it: `broken_metrics`. A correct sampler without a
docstring, which the kit must warn about and still judge: `no_docstring`. `bench_plugins`
serves the benchmark-runner tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE_SRC = EXAMPLES / "harness-dpmsolver" / "src"


def example_plugin() -> ModuleType:
    """The sampler example's plugin module: installed, or straight from its source."""
    return _installed_or_source("harness_dpmsolver", EXAMPLE_SRC)


def example_metric_plugin() -> ModuleType:
    """The metric example's plugin module (examples/harness-energy), likewise."""
    return _installed_or_source("harness_energy", EXAMPLES / "harness-energy" / "src")


def _installed_or_source(name: str, src: Path) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    package = src / name
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
