"""A benchmark harness for diffusion-model samplers.

The public API for plugin authors and users is re-exported here; `harness.hookspecs`
is the plugin author's reference.
"""

from .errors import HarnessError, ParameterError, PluginError, UnknownNameError
from .metrics.fid import FID, KID, reference_stats
from .hookspecs import HARNESS_API_VERSION, hookimpl
from .metrics.discrete_kl import NotInvertibleError, discrete_kl, sampler_log_density
from .metrics.likelihood import NLLResult, ode_nll
from .metrics.ode_error import ode_error, reference_solve
from .core.model import DataSpec, NetworkScoreModel, NFECounter, ScoreModel
from .core.noise import SampleNoise
from .models.oracle import GaussianMixture
from .plugin.registry import ModelSpec, Origin
from .core.sampler import Capabilities, NoParams, Params, Sampler, param
from .core.sampling import generate
from .core.schedules import SCHEDULES, TimeGrid, make_grid
from .core.sde import EDMSDE, SDE, SubVPSDE, VESDE, VPSDE, make_sde

__version__ = "0.1.0"

__all__ = [
    "HARNESS_API_VERSION", "Capabilities", "DataSpec", "EDMSDE", "GaussianMixture",
    "FID", "HarnessError", "KID", "ModelSpec", "NFECounter", "NLLResult", "NetworkScoreModel", "NoParams", "Origin",
    "ParameterError", "Params", "PluginError", "SCHEDULES", "SDE", "SampleNoise", "Sampler",
    "ScoreModel", "SubVPSDE", "TimeGrid", "UnknownNameError", "VESDE", "VPSDE",
    "generate", "hookimpl", "make_grid", "make_sde", "ode_nll", "param", "reference_stats",
    # a deterministic sampler's own error: ODE discretisation error and exact KL
    "NotInvertibleError", "discrete_kl", "ode_error", "reference_solve", "sampler_log_density",
]
