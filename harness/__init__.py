"""A benchmark harness for diffusion-model samplers.

The public API for plugin authors and users is re-exported here; `harness.hookspecs`
is the plugin author's reference, `harness.testing` the conformance kit. Anything not
exported here is internal and may change without notice.
"""

from .errors import HarnessError, ParameterError, PluginError, UnknownNameError
from .hookspecs import HARNESS_API_VERSION, hookimpl

# The maths: processes, grids, the model interface, the sampler contract, noise.
from .core.counting import CountedModel, NFECounter
from .core.guidance import GuidedModel
from .core.labels import sample_labels
from .core.model import (NULL_LABEL, DataSpec, NetworkScoreModel, ReferenceData,
                         ScoreModel)
from .metrics.discrete_kl import MAX_DIM as DISCRETE_KL_MAX_DIM
from .metrics.discrete_kl import (
    DiscreteDensity,
    NotInvertibleError,
    discrete_kl,
    sampler_log_density,
)
from .metrics.ode_error import (
    REFERENCE_SOLVER,
    REFERENCE_TOLERANCE,
    float64_model,
    initial_state,
    ode_error,
    reference_solve,
)
from .metrics.reference_store import ReferenceStore
from .core.distributed import print0
from .core.noise import SampleNoise
from .core.sampler import Capabilities, NoParams, Params, Sampler, param
from .core.sampling import generate
from .core.schedules import SCHEDULES, make_grid
from .core.time_grid import ChosenSchedule, Schedule, TimeGrid, sigma_range, times_of_sigmas
from .core.sde import EDMSDE, SDE, SubVPSDE, VESDE, VPSDE, make_sde

# Models.
from .models.oracle import ConditionalGaussianMixture, GaussianMixture
from .plugin.registry import ModelSpec, Origin

# The metric contract, its sharding helpers and the bootstrap of set metrics.
from .metrics.bootstrap import Bootstrap
from .metrics.feature_replicates import fid_replicates, kid_replicates
from .metrics.fid_infinity import FIDInfinity, fid_infinity
from .metrics.metric import (
    Metric,
    SuiteContext,
    TrialContext,
    all_reduce_sum,
    gather_concat,
    local_rows,
    shared_failure,
    world_size,
)

# Measurement back-ends a metric can build on: FID/KID and their features, the
# probability-flow likelihood, distances between sample sets, and their sharded forms.
from .metrics.fid import (
    FID,
    KID,
    Float64Features,
    IdentityFeatures,
    extract,
    inception_extractor,
    reference_stats,
)
from .metrics.feature_space import feature_space
from .metrics.trial_features import postprocess
from .metrics.class_accuracy import (
    accuracy_replicates,
    class_accuracy,
    class_hits,
    classify,
    labelled_accuracy,
)
from .metrics.class_fid import ClassFID, class_fid, class_fid_replicates, class_statistics
from .metrics.precision_recall import DEFAULT_K as PRECISION_RECALL_K
from .metrics.precision_recall import (
    PrecisionRecall,
    improved_precision,
    improved_recall,
    inside_manifold,
    knn_radii,
    precision_recall,
)
from .metrics.likelihood import METHODS as NLL_METHODS
from .metrics.likelihood import NLLResult, ode_nll
from .metrics.sharded import sharded_fid, sharded_nll
from .metrics.two_sample import gaussian_mmd2, median_bandwidth, sliced_wasserstein

__version__ = "0.1.0"

__all__ = [
    # errors and plugins
    "HARNESS_API_VERSION", "HarnessError", "ParameterError", "PluginError",
    "UnknownNameError", "hookimpl", "ModelSpec", "Origin",
    # the maths and models
    "Capabilities", "ConditionalGaussianMixture", "DataSpec", "EDMSDE", "GaussianMixture",
    "CountedModel", "GuidedModel", "NULL_LABEL", "NFECounter", "sample_labels",
    "NetworkScoreModel", "NoParams", "Params", "ReferenceData", "SCHEDULES", "SDE",
    "SampleNoise", "Sampler", "Schedule", "ChosenSchedule", "sigma_range",
    "times_of_sigmas", "ScoreModel", "SubVPSDE", "TimeGrid", "VESDE", "VPSDE",
    "generate", "make_grid", "make_sde", "param",
    # the metric contract and sharding
    "Metric", "SuiteContext", "TrialContext", "world_size", "local_rows",
    "all_reduce_sum", "gather_concat", "shared_failure", "Bootstrap",
    # measurement back-ends
    "FID", "KID", "fid_replicates", "kid_replicates", "FIDInfinity", "fid_infinity", "Float64Features", "IdentityFeatures", "NLLResult", "extract",
    "gaussian_mmd2", "inception_extractor", "median_bandwidth",
    "ode_nll", "reference_stats", "sharded_fid", "sharded_nll", "sliced_wasserstein",
    # the feature space shared by a suite's set metrics
    "feature_space", "postprocess",
    # class-conditional samples: class accuracy, intra-class FID; precision and recall
    "accuracy_replicates", "class_accuracy", "class_hits", "classify", "labelled_accuracy",
    "ClassFID", "class_fid", "class_fid_replicates", "class_statistics",
    "PRECISION_RECALL_K", "PrecisionRecall", "improved_precision", "improved_recall",
    "inside_manifold", "knn_radii", "precision_recall",
    # a deterministic sampler's own error: ODE discretisation error and exact KL
    "NotInvertibleError", "discrete_kl", "ode_error", "reference_solve", "sampler_log_density",
    "DISCRETE_KL_MAX_DIM", "DiscreteDensity", "REFERENCE_SOLVER", "REFERENCE_TOLERANCE",
    "float64_model", "initial_state", "NLL_METHODS", "print0", "ReferenceStore",
]
