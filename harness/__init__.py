"""A benchmark harness for diffusion-model samplers.

What a plugin author needs is exported here, and nothing else: the errors, the plugin
hooks, the sampler contract, the model interface, the processes and time grids, the
metric contract with its distributed helpers. `harness.hookspecs` is the plugin author's
reference and `harness.testing` the conformance kits; the measurement back-ends a metric
can build on (FID and KID, the probability-flow likelihood, two-sample distances, the
exact-error metrics) are the documented namespace `harness.metrics`; running suites from
Python is `harness.bench` (`load_suite`, `resolve_plan`, `run_plan`). Any other module is
internal and may change without notice. docs/plugins.md lists every name exported here,
and a test holds the two together.
"""

from .errors import HarnessError, ParameterError, PluginError, UnknownNameError
from .hookspecs import HARNESS_API_VERSION, hookimpl
from .plugin.registry import ModelSpec

# The sampler contract and what a sampler is called with.
from .core.sampler import Capabilities, NoParams, Params, Sampler, param
from .core.sampling import generate

# The model interface, and the wrapper that counts (and times) evaluations through it.
from .core.counting import CountedModel, NFECounter
from .core.guidance import GuidedModel
from .core.model import NULL_LABEL, DataSpec, NetworkScoreModel, ReferenceData, ScoreModel

# Forward processes and time grids.
from .core.schedules import SCHEDULES, make_grid
from .core.sde import EDMSDE, SDE, SubVPSDE, VESDE, VPSDE, make_sde
from .core.time_grid import Schedule, TimeGrid, sigma_range, times_of_sigmas

# The metric contract, the bootstrap of set metrics, and the helpers a metric needs to
# run sharded under torchrun.
from .core.distributed import all_reduce_sum, gather_concat, local_rows, shared_failure, world_size
from .metrics.bootstrap import Bootstrap
from .metrics.metric import Metric, SuiteContext, TrialContext

__version__ = "0.1.0"

__all__ = [
    # errors and plugins
    "HarnessError", "ParameterError", "PluginError", "UnknownNameError",
    "HARNESS_API_VERSION", "hookimpl", "ModelSpec",
    # samplers
    "Capabilities", "NoParams", "Params", "Sampler", "param", "generate",
    # models
    "CountedModel", "DataSpec", "GuidedModel", "NFECounter", "NULL_LABEL",
    "NetworkScoreModel", "ReferenceData", "ScoreModel",
    # processes and grids
    "EDMSDE", "SDE", "SubVPSDE", "VESDE", "VPSDE", "make_sde", "SCHEDULES", "Schedule",
    "TimeGrid", "make_grid", "sigma_range", "times_of_sigmas",
    # metrics
    "Bootstrap", "Metric", "SuiteContext", "TrialContext",
    "all_reduce_sum", "gather_concat", "local_rows", "shared_failure", "world_size",
]
