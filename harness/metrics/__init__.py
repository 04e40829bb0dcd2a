"""What is measured: the metric contract (`Metric`, `TrialContext`, `SuiteContext`; also
exported by `harness`) and the measurement back-ends a metric can build on, exported here
as the documented namespace `harness.metrics`:

* feature distances: FID and KID (`FID`, `KID`, `frechet_distance`, `reference_stats`,
  `ReferenceStats`, the extractors), the suite's feature space (`feature_space`, its
  options `FEATURE_SPACE_DEFAULTS` and logged `feature_info`, `postprocess`; Inception
  and DINOv2 in `docs/feature_spaces.md`), published reference moments (`reference_npz`),
  a trial's features taken once (`TrialFeatures`), their bootstrap
  replicates, FID_inf, class-conditional FID, class accuracy, improved precision and
  recall;
* the probability-flow likelihood (`ode_nll`, `NLLResult`) and its sharded form;
* distances between sample sets (`sliced_wasserstein`, `gaussian_mmd2`);
* a deterministic sampler's own error: ODE discretisation error against a reference
  solve (`ode_error`, `reference_solve`) and the exact KL of its discrete map
  (`discrete_kl`), with the store that shares reference solves (`ReferenceStore`).

A function named as its module (`ode_error`, `discrete_kl`, `fid_infinity`, `class_fid`,
`class_accuracy`, `precision_recall`, `feature_space`, `reference_npz`) is reached through that module, e.g.
`from harness.metrics.ode_error import ode_error`: exported here it would hide the
module of the same name.

Layer 3. It may import `harness.models`, `harness.core` and `harness.errors`; it knows
nothing of suites, runners, sinks or MLflow.
"""

from .bootstrap import Bootstrap
from .class_accuracy import accuracy_replicates, class_hits, classify, labelled_accuracy
from .class_fid import ClassFID, class_fid_replicates, class_statistics
from .discrete_kl import MAX_DIM as DISCRETE_KL_MAX_DIM
from .discrete_kl import DiscreteDensity, NotInvertibleError, sampler_log_density
from .feature_replicates import fid_replicates, kid_replicates
from .feature_space import FEATURE_SPACE_DEFAULTS, feature_info
from .fid import (
    FID,
    KID,
    Float64Features,
    IdentityFeatures,
    ReferenceStats,
    extract,
    frechet_distance,
    inception_extractor,
    reference_stats,
)
from .fid_infinity import FIDInfinity
from .likelihood import METHODS as NLL_METHODS
from .likelihood import NLLResult, ode_nll
from .metric import Metric, SuiteContext, TrialContext
from .ode_error import (
    REFERENCE_SOLVER,
    REFERENCE_TOLERANCE,
    float64_model,
    initial_state,
    reference_solve,
)
from .precision_recall import DEFAULT_K as PRECISION_RECALL_K
from .precision_recall import (
    PrecisionRecall,
    improved_precision,
    improved_recall,
    inside_manifold,
    knn_radii,
)
from .reference_store import ReferenceStore
from .sharded import sharded_fid, sharded_nll
from .trial_features import TrialFeatures, postprocess
from .two_sample import gaussian_mmd2, median_bandwidth, sliced_wasserstein

__all__ = [
    # the contract
    "Bootstrap", "Metric", "SuiteContext", "TrialContext",
    # feature distances
    "FID", "KID", "Float64Features", "IdentityFeatures", "ReferenceStats", "TrialFeatures",
    "extract", "frechet_distance", "inception_extractor", "postprocess", "reference_stats",
    "fid_replicates", "kid_replicates", "FIDInfinity", "sharded_fid",
    "FEATURE_SPACE_DEFAULTS", "feature_info",
    # class-conditional samples; precision and recall
    "accuracy_replicates", "class_hits", "classify", "labelled_accuracy", "ClassFID",
    "class_fid_replicates", "class_statistics", "PRECISION_RECALL_K", "PrecisionRecall",
    "improved_precision", "improved_recall", "inside_manifold", "knn_radii",
    # likelihood and sample-set distances
    "NLL_METHODS", "NLLResult", "ode_nll", "sharded_nll", "gaussian_mmd2",
    "median_bandwidth", "sliced_wasserstein",
    # a deterministic sampler's own error
    "DISCRETE_KL_MAX_DIM", "DiscreteDensity", "NotInvertibleError", "sampler_log_density",
    "REFERENCE_SOLVER", "REFERENCE_TOLERANCE", "ReferenceStore", "float64_model",
    "initial_state", "reference_solve",
]
