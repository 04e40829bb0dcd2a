"""Built-in metrics: FID, FD_DINOv2, FID_inf, KID, the model's NLL and oracle distances.

Each is a `harness.Metric` registered through `harness_register_metrics`, the same door
a third-party metric uses, and written against the public API (`from harness import
...`) alone. Options come from the suite, keyed by metric name
(`suite.options["nll"]["num_points"]`, ...); the defaults are the class's `DEFAULTS`.
Work shared by every trial of a suite (reference statistics, the model's reference NLL)
is done once and kept in `suite.cache`. Metric evaluations leave the model's NFE counter
as they found it, so they never leak into a trial's sampling NFE.

What the samples are compared with comes from the model: `model.reference_data(split,
num, seed)` (the "real" side of FID/KID, the NLL's test points, the exact samples of an
oracle) and `model.feature_extractor(device)` (FID/KID features). A model without
reference data is left out of these metrics; the oracle distances need exact reference
samples (`model.reference_is_exact`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from harness import (
    Metric,
    ParameterError,
    SuiteContext,
    TrialContext,
    hookimpl,
)
from harness.metrics import (
    FEATURE_SPACE_DEFAULTS,
    KID,
    feature_info,
    fid_replicates,
    gaussian_mmd2,
    kid_replicates,
    median_bandwidth,
    reference_stats,
    sharded_nll,
    sliced_wasserstein,
)
from harness.metrics.feature_space import feature_space
from harness.metrics.fid_infinity import fid_infinity
from harness.metrics.reference_npz import reference_npz

harness_api_version = 1


class _Configured(Metric):
    """A metric with defaults that the suite's options override (unknown keys refused)."""

    DEFAULTS: dict[str, Any] = {}

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def params(self) -> dict[str, Any]:
        """The conventions of the last suite this metric was prepared for."""
        return dict(self.info)


# --- FID and KID -----------------------------------------------------------------------------

class _FeatureMetric(_Configured):
    """A distance between the features of the trial's samples and of the reference set.

    The samples' features come from the trial (`trial.features`): extracted once per
    trial, whichever of these metrics asks first, and shared by the rest.

    Its bootstrap replicates resample both sets (the reference by index sets shared by
    every trial, `Bootstrap.reference_sets`), each with its linear part, and it returns
    the first-order standard errors that come from each set (`<name>_se_samples`,
    `<name>_se_reference`): `harness.metrics.bootstrap` makes the intervals of them.
    """

    on_real_data = True
    DEFAULTS = {**FEATURE_SPACE_DEFAULTS, "split": "test", "num_reference": None, "seed": 0,
                "postprocess": "clamp", "cache_dir": None, "reference_npz": None}
    #: Whether published moments (`reference_npz`) suffice: FID's; the others need the
    #: reference set's features.
    from_moments = False

    def applies_to(self, suite: SuiteContext) -> bool:
        # Published moments stand in for a model without reference data (a latent
        # model's images): FID's alone.
        return bool(suite.model.reference_splits) or bool(
            self.from_moments and self.options(suite)["reference_npz"])

    def prepare(self, suite: SuiteContext) -> None:
        opts = self.options(suite)
        if opts["reference_npz"] and not self.from_moments:
            raise ParameterError(f"metric {self.name!r} needs the reference set's "
                                 f"features; reference_npz gives only their mean and "
                                 f"covariance (use it with fid alone)")
        kind, extractor = feature_space(suite, opts)
        if opts["reference_npz"]:
            stats = reference_npz(opts["reference_npz"], extractor.num_features)
            reference = {f"{self.name}_reference_npz": stats.path,
                         f"{self.name}_reference_npz_sha256": stats.sha256}
        else:
            ref = suite.model.reference_data(opts["split"], opts["num_reference"],
                                             opts["seed"])
            stats = reference_stats(ref.data_id, lambda: ref.data, extractor,
                                    keep_features=True, cache_dir=opts["cache_dir"])
            reference = {f"{self.name}_num_reference": stats.n}
        suite.cache[f"metrics.{self.name}"] = (extractor, stats, opts)
        self.info = {**feature_info(self.name, kind, extractor),
                     f"{self.name}_reference": stats.data_id, **reference,
                     f"{self.name}_postprocess": opts["postprocess"],
                     f"{self.name}_accumulation": "float64"}

    def feature_spaces(self, suite: SuiteContext) -> list[tuple[Any, str]]:
        extractor, _, opts = suite.cache[f"metrics.{self.name}"]
        return [(extractor, opts["postprocess"])]

    def samples_read(self, suite: SuiteContext) -> int:
        return 0  # the features alone

    def _state(self, trial: TrialContext):
        key = f"metrics.{self.name}"
        if key not in trial.suite.cache:
            self.prepare(trial.suite)
        return trial.suite.cache[key]

    def _record(self, trial: TrialContext, replicates, shift: float = 0.0
                ) -> dict[str, float]:
        """Record `replicates` (moved by `shift`) as this metric's; its se parts."""
        trial.bootstrap.record(self.name, (replicates.values + shift).tolist(), minimum=0.0,
                               linear=replicates.linear.tolist())
        return {f"{self.name}_se_samples": replicates.se_samples,
                f"{self.name}_se_reference": replicates.se_reference}

    def _features(self, trial: TrialContext):
        """(the samples' features, the reference statistics, the options)."""
        extractor, stats, opts = self._state(trial)
        return trial.features(extractor, opts["postprocess"]), stats, opts

    def _replicates(self, trial: TrialContext, features: Tensor, stats, statistic):
        bootstrap = trial.bootstrap
        return statistic(features, stats.features, bootstrap.index_sets,
                         bootstrap.reference_sets(stats.n))


class FIDMetric(_FeatureMetric):
    """FID (Heusel et al. 2017) of the trial's samples against the reference split.

    The samples' float64 moments (summed over processes under torchrun) against the
    reference's, by the one Fréchet formula (`harness.metrics.fid`). With its replicates
    comes `fid_bias`, its small-N bias at this N and reference size (the slope of the
    FID_inf fit, `harness.metrics.fid_infinity`).
    """

    name = "fid"
    unit = "FID"
    higher_is_better = False
    description = "Frechet distance of feature Gaussians to the reference data (lower is better)"

    from_moments = True

    def compute(self, trial: TrialContext) -> dict[str, float]:
        features, stats, _ = self._features(trial)
        name = self.name
        out = {name: features.stats.fid_against(stats),
               f"{name}_num_samples": float(features.stats.n)}
        if stats.features is None:  # published moments: no set to resample, no interval
            return out
        out[f"{name}_num_reference"] = float(stats.n)
        if trial.bootstrap is not None:
            out.update(self._record(trial, self._replicates(trial, features.matrix, stats,
                                                            fid_replicates)))
            # FID at a distance of 0, its small-N bias: where its interval's variance
            # is the second-order part alone (`harness.metrics.bootstrap`).
            out[f"{name}_bias"] = fid_infinity(features.matrix, stats.features).slope
        return out


class FDDINOv2Metric(FIDMetric):
    """FD_DINOv2 (Stein et al. 2023; EDM2's second metric): the Frechet distance of FID
    in the feature space of DINOv2 ViT-L/14 (`harness.metrics.dinov2`), beside FID in a
    suite's `metrics` (`[metrics.fd_dinov2] dinov2_weights = ...`): each has its own
    extractor, options, reference statistics and interval."""

    name = "fd_dinov2"
    unit = "FD_DINOv2"
    description = ("Frechet distance of DINOv2 ViT-L/14 feature Gaussians to the "
                   "reference data (lower is better)")
    DEFAULTS = {**FIDMetric.DEFAULTS, "extractor": "dinov2"}

    def applies_to(self, suite: SuiteContext) -> bool:
        shape = suite.model.data.shape  # DINOv2 sees RGB (or grey) images
        return len(shape) == 3 and shape[0] in (1, 3) and super().applies_to(suite)

    def prepare(self, suite: SuiteContext) -> None:
        extractor = self.options(suite)["extractor"]
        if extractor != "dinov2":
            raise ParameterError(f"metric 'fd_dinov2' is FID in DINOv2's feature space: "
                                 f"its extractor is 'dinov2', not {extractor!r} (for "
                                 f"another space use fid's extractor option)")
        super().prepare(suite)


class FIDInfinityMetric(_FeatureMetric):
    """FID_inf (Chong & Forsyth 2020): FID extrapolated to infinitely many samples of
    both sets, from FIDs of subsets of several sizes (`harness.metrics.fid_infinity`).

    Opt-in (`[metrics.fid_inf]`): unlike FID it can be compared across sample sizes and
    reference sizes. Its replicates are FID's moved to FID_inf (the extrapolation
    removes a bias that varies far less than FID does), made into a distance's interval
    with its zero at 0 (`tests/test_fid_infinity.py` measures its coverage of the
    population FID).
    """

    name = "fid_inf"
    unit = "FID"
    higher_is_better = False
    description = ("FID extrapolated to infinitely many samples, linear in 1/N "
                   "(Chong & Forsyth 2020; lower is better)")
    #: `fractions` (subset sizes over both sets' sizes) and `draws` (subsets per size):
    #: None takes `fid_infinity`'s.
    DEFAULTS = {**_FeatureMetric.DEFAULTS, "fractions": None, "draws": None}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        sample_features, stats, opts = self._features(trial)
        features = sample_features.matrix
        chosen = {k: opts[k] for k in ("fractions", "draws") if opts[k] is not None}
        result = fid_infinity(features, stats.features, **chosen)
        self.info = {**self.info, "fid_inf_fractions": str(list(result.fractions)),
                     "fid_inf_draws": result.draws,
                     "fid_inf_fit": "least squares FID(f) = FID_inf + slope / f over "
                                    "subsets of both sets of fraction f"}
        out = {"fid_inf": result.value, "fid_inf_slope": result.slope,
               "fid_inf_num_samples": float(features.shape[0])}
        if trial.bootstrap is not None:
            replicates = self._replicates(trial, features, stats, fid_replicates)
            out.update(self._record(trial, replicates, result.value - replicates.estimate))
        return out


class KIDMetric(_FeatureMetric):
    """KID (Binkowski et al. 2018): unbiased polynomial-kernel MMD^2 over feature subsets."""

    name = "kid"
    unit = "KID"
    higher_is_better = False
    description = "kernel distance of features to the reference data (lower is better)"
    DEFAULTS = {**_FeatureMetric.DEFAULTS, "subset_size": 1000, "subsets": 100}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        extractor, stats, opts = self._state(trial)
        features = trial.features(extractor, opts["postprocess"]).matrix
        kid = KID(extractor, stats, subset_size=opts["subset_size"], subsets=opts["subsets"],
                  seed=opts["seed"])
        mean, std, n = kid.of_features(features)
        out = {"kid": mean, "kid_std": std, "kid_num_samples": float(n)}
        if trial.bootstrap is not None:
            out.update(self._record(trial, self._replicates(trial, features, stats,
                                                            kid_replicates)))
        return out


# --- likelihood ------------------------------------------------------------------------------

class _NLLMetric(_Configured):
    unit = "bits/dim"
    higher_is_better = False
    DEFAULTS = {"num_points": 256, "num_probes": 4, "probe": "rademacher",
                "method": "hutchinson", "eps": None, "seed": 0, "split": "test",
                "batch_size": None}

    def applies_to(self, suite: SuiteContext) -> bool:
        return bool(suite.model.reference_splits)

    def _points(self, suite: SuiteContext, opts: dict[str, Any]) -> Tensor:
        key = ("metrics.nll_points", opts["split"], opts["num_points"], opts["seed"])
        if key not in suite.cache:
            ref = suite.model.reference_data(opts["split"], opts["num_points"], opts["seed"])
            suite.cache[key] = ref.data
        return suite.cache[key]

    def _values(self, result) -> dict[str, float]:
        name = self.name
        self.info = {f"{name}_{k.removeprefix('nll_')}": v for k, v in result.params().items()}
        to_bits = 1.0 / (result.dim * math.log(2))
        # The probes' Monte-Carlo error and the spread over test points, apart (each
        # only when it can be told: one probe per point cannot separate them).
        parts = {f"{name}_{part}_stderr": value * to_bits for part, value in
                 (("probe", result.probe_stderr), ("data", result.data_stderr))
                 if value is not None}
        return {**parts,
                name: result.bits_per_dim, f"{name}_stderr": result.bits_per_dim_stderr,
                f"{name}_nats": result.nats, f"{name}_nats_per_dim": result.nats_per_dim,
                f"{name}_nfe_mean": result.nfe_mean, f"{name}_nfe_max": result.nfe_max,
                f"{name}_num_points": float(result.num_points)}


class NLLMetric(_NLLMetric):
    """The model's test NLL by the PF-ODE, dopri5 (Song et al. 2021, App. D.2).

    A property of the model, not of the sampler: computed once per suite and repeated for
    every trial so that tables line up.
    """

    name = "nll"
    per_suite = True  # a property of the model: the trial passed has no sampler or samples
    description = ("test-set NLL by the probability-flow ODE (dopri5, Hutchinson), "
                   "bits/dim with dequantisation offset from the data spec")
    DEFAULTS = {**_NLLMetric.DEFAULTS, "solver": "dopri5", "rtol": 1e-5, "atol": 1e-5}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        suite = trial.suite
        opts = self.options(suite)
        key = ("metrics.nll", tuple(sorted(opts.items(), key=lambda kv: kv[0])))
        if key not in suite.cache:
            suite.cache[key] = sharded_nll(
                suite.model, self._points(suite, opts), dtype=suite.dtype,
                method=opts["method"],
                probe=opts["probe"], num_probes=opts["num_probes"], eps=opts["eps"],
                solver=opts["solver"], rtol=opts["rtol"], atol=opts["atol"],
                seed=opts["seed"], batch_size=opts["batch_size"])
        return self._values(suite.cache[key])


# --- distances to exact samples (oracles) ----------------------------------------------------

class _OracleMetric(_Configured):
    higher_is_better = False
    on_real_data = True
    DEFAULTS = {"num_reference": 10_000, "seed": 0}

    def applies_to(self, suite: SuiteContext) -> bool:
        return bool(suite.model.reference_splits) and suite.model.reference_is_exact

    def _exact(self, suite: SuiteContext, opts: dict[str, Any]) -> Tensor:
        key = ("metrics.exact", opts["num_reference"], opts["seed"])
        if key not in suite.cache:
            suite.cache[key] = suite.model.reference_data("test", opts["num_reference"],
                                                          opts["seed"]).data
        return suite.cache[key]


class SlicedWassersteinMetric(_OracleMetric):
    """Sliced 2-Wasserstein distance to exact samples of the oracle (Bonneel et al. 2015)."""

    name = "sliced_wasserstein"
    unit = "SW2"
    description = "sliced 2-Wasserstein distance to exact oracle samples (lower is better)"
    DEFAULTS = {**_OracleMetric.DEFAULTS, "num_projections": 256}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        opts = self.options(trial.suite)
        exact = self._exact(trial.suite, opts)
        result = sliced_wasserstein(trial.samples, exact, opts["num_projections"], p=2.0,
                                    seed=opts["seed"])
        self.info = {"sliced_wasserstein_projections": opts["num_projections"],
                     "sliced_wasserstein_num_reference": exact.shape[0],
                     "sliced_wasserstein_stderr": "projection noise only"}
        return {self.name: result.distance, f"{self.name}_stderr": result.stderr}


class MMDOracleMetric(_OracleMetric):
    """Unbiased MMD^2 (Gaussian kernel) to exact oracle samples (Gretton et al. 2012).

    The bandwidth is the median pairwise distance of the exact samples, fixed once per
    suite so that every sampler is measured with the same kernel.
    """

    name = "mmd_oracle"
    unit = "MMD^2"
    description = "unbiased Gaussian-kernel MMD^2 to exact oracle samples (lower is better)"
    DEFAULTS = {"num_reference": 2000, "seed": 0, "bandwidth": None}

    def compute(self, trial: TrialContext) -> dict[str, float]:
        opts = self.options(trial.suite)
        exact = self._exact(trial.suite, opts)
        bandwidth = opts["bandwidth"]
        if bandwidth is None:
            key = ("metrics.mmd_bandwidth", opts["num_reference"], opts["seed"])
            if key not in trial.suite.cache:
                trial.suite.cache[key] = median_bandwidth(exact, exact[:0])
            bandwidth = trial.suite.cache[key]
        result = gaussian_mmd2(trial.samples, exact, bandwidth)
        self.info = {"mmd_oracle_kernel": "gaussian exp(-|x-y|^2 / (2 h^2))",
                     "mmd_oracle_bandwidth": result.bandwidth,
                     "mmd_oracle_estimator": "unbiased U-statistic",
                     "mmd_oracle_num_reference": exact.shape[0]}
        return {self.name: result.mmd2, f"{self.name}_bandwidth": result.bandwidth}


METRICS = (FIDMetric, FDDINOv2Metric, FIDInfinityMetric, KIDMetric, NLLMetric,
           SlicedWassersteinMetric, MMDOracleMetric)


@hookimpl
def harness_register_metrics(register):
    for cls in METRICS:
        register(cls())
