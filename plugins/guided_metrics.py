"""Metrics of class-conditional, guided sampling, and improved precision and recall.

* ``class_accuracy``: the fraction of a trial's samples that the model's own classifier
  (`model.classifier(device)`) assigns to the class each was generated for
  (`trial.labels`); beside it, once per suite, the classifier's accuracy on the labelled
  reference data, the ceiling a sampler cannot be expected to pass.
* ``class_fid``: intra-class FID, the mean over the classes generated of the FID between
  a class's samples and the reference samples of that class, with ``class_fid_<c>``
  per class.
* ``precision`` and ``recall``: improved precision and recall (Kynkaanniemi et al.
  2019) with k-NN manifolds: how much of the samples is realistic, and how much of the
  real data the samples cover. Two metrics, so that each is a column of the
  leaderboard with its own direction; both apply to unconditional models too.

The class metrics apply to conditional models (`model.num_classes > 0`) and measure
trials that carry labels (guided trials, and the real-data floor when the reference data
are labelled); a trial without labels gets no value, and the reason is logged as the
parameter ``<name>_status``. The feature space is the one FID uses (`harness.feature_space`
with the same options: the model's extractor, InceptionV3 or the flattened samples), and
the reference features come from FID's on-disk cache; the samples' features are the
trial's, extracted once for FID and these alike (`trial.features`). The measurement code is in
`harness.metrics` (`class_accuracy`, `class_fid`, `precision_recall`); this module only
reads options, prepares the references once per suite and logs conventions. Written
against the public API (`from harness import ...`) alone.
"""

from __future__ import annotations

from typing import Any

from harness import (
    Metric,
    ParameterError,
    SuiteContext,
    TrialContext,
    hookimpl,
)
from harness.metrics import (
    FEATURE_SPACE_DEFAULTS,
    PRECISION_RECALL_K,
    accuracy_replicates,
    class_fid_replicates,
    class_hits,
    class_statistics,
    classify,
    improved_precision,
    improved_recall,
    knn_radii,
    labelled_accuracy,
    postprocess,
    reference_stats,
)
from harness.metrics.class_fid import class_fid
from harness.metrics.feature_space import feature_space

harness_api_version = 1

#: The options of the feature space and the reference set, with FID's defaults.
FEATURE_DEFAULTS = {**FEATURE_SPACE_DEFAULTS, "split": "test", "num_reference": None,
                    "seed": 0, "postprocess": "clamp", "cache_dir": None}

NO_LABELS = ("no labels: the trial is not class-conditional (an unguided trial, or real "
             "data without labels), so there is no intended class to compare with")


class _Configured(Metric):
    """A metric with defaults that the suite's options override (unknown keys refused);
    `params()` gives the conventions of its last suite and trial."""

    DEFAULTS: dict[str, Any] = {}

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def params(self) -> dict[str, Any]:
        return dict(self.info)

    def _state(self, trial: TrialContext) -> Any:
        key = f"metrics.{self.name}"
        if key not in trial.suite.cache:
            self.prepare(trial.suite)
        return trial.suite.cache[key]


def _reference_features(suite: SuiteContext, opts: dict[str, Any]):
    """(extractor kind, extractor, reference data, statistics with features), once per
    suite for every metric with the same options; the features from FID's disk cache."""
    kind, extractor = feature_space(suite, opts)
    key = ("metrics.reference_features", kind, str(extractor.sha256), opts["split"],
           opts["num_reference"], opts["seed"], opts["cache_dir"])
    if key not in suite.cache:
        ref = suite.model.reference_data(opts["split"], opts["num_reference"], opts["seed"])
        stats = reference_stats(ref.data_id, lambda: ref.data, extractor,
                                keep_features=True, cache_dir=opts["cache_dir"])
        suite.cache[key] = (ref, stats)
    return (kind, extractor, *suite.cache[key])


def _feature_info(name: str, kind: str, ref, stats, opts: dict[str, Any]) -> dict[str, Any]:
    return {f"{name}_extractor": kind, f"{name}_extractor_sha256": stats.extractor_sha256,
            f"{name}_num_features": int(stats.features_sum.numel()),
            f"{name}_reference": ref.data_id, f"{name}_num_reference": stats.n,
            f"{name}_postprocess": opts["postprocess"]}


def _counts(counts: dict[int, int]) -> str:
    return ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()))


# --- class accuracy ------------------------------------------------------------------------

class ClassAccuracyMetric(_Configured):
    """The fraction of samples classified as the class they were generated for."""

    name = "class_accuracy"
    unit = "1"
    higher_is_better = True
    # On the floor row (held-out real data with their true labels) it is the classifier's
    # accuracy on real data: the ceiling, in the same table.
    on_real_data = True
    description = ("fraction of conditional samples the model's classifier assigns to "
                   "their intended class (higher is better)")
    DEFAULTS = {"split": "test", "num_reference": None, "seed": 0, "postprocess": "clamp",
                "batch_size": 500}

    def _classifier(self, suite: SuiteContext):
        key = ("metrics.classifier",)
        if key not in suite.cache:
            suite.cache[key] = suite.model.classifier(suite.device)
        return suite.cache[key]

    def applies_to(self, suite: SuiteContext) -> bool:
        return suite.model.num_classes > 0 and self._classifier(suite) is not None

    def prepare(self, suite: SuiteContext) -> None:
        opts = self.options(suite)
        classifier = self._classifier(suite)
        info: dict[str, Any] = {
            "class_accuracy_classifier": getattr(classifier, "name", None)
            or type(classifier).__name__,
            "class_accuracy_classifier_sha256": str(classifier.sha256),
            "class_accuracy_definition": "fraction of samples whose argmax of the "
                                         "classifier's logits is the class asked for",
            "class_accuracy_postprocess": opts["postprocess"],
            "class_accuracy_num_classes": suite.model.num_classes,
            "class_accuracy_bootstrap": "replicates resample the samples (with their "
                                        "labels)"}
        ref = (suite.model.reference_data(opts["split"], opts["num_reference"], opts["seed"])
               if suite.model.reference_splits else None)
        if ref is not None and ref.labels is not None:
            ceiling = labelled_accuracy(classifier, ref.data, ref.labels,
                                        opts["batch_size"])
            info.update({"class_accuracy_reference_accuracy": round(ceiling, 6),
                         "class_accuracy_reference": ref.data_id,
                         "class_accuracy_num_reference": int(ref.labels.numel())})
        else:
            info["class_accuracy_reference_accuracy"] = ("not measured: the model has no "
                                                         "labelled reference data")
        suite.cache[f"metrics.{self.name}"] = (classifier, info, opts)
        self.info = dict(info)

    def compute(self, trial: TrialContext) -> dict[str, float]:
        classifier, info, opts = self._state(trial)
        if trial.labels is None:
            self.info = {**info, "class_accuracy_status": NO_LABELS}
            return {}
        samples = postprocess(trial.samples, trial.suite.model, opts["postprocess"])
        hits = class_hits(classify(classifier, samples, opts["batch_size"]), trial.labels)
        if trial.bootstrap is not None:
            trial.bootstrap.record(self.name, accuracy_replicates(
                hits, trial.bootstrap.index_sets), minimum=0.0)
        self.info = {**info, "class_accuracy_status": "ok"}
        return {self.name: float(hits.double().mean()),
                f"{self.name}_num_samples": float(hits.numel())}


# --- intra-class FID -----------------------------------------------------------------------

class ClassFIDMetric(_Configured):
    """Intra-class FID: the mean over generated classes of FID(class c vs reference c)."""

    name = "class_fid"
    unit = "FID"
    higher_is_better = False
    on_real_data = True
    description = ("mean over classes of the FID between each class's samples and the "
                   "reference samples of that class (lower is better)")
    DEFAULTS = dict(FEATURE_DEFAULTS)

    def applies_to(self, suite: SuiteContext) -> bool:
        return suite.model.num_classes > 0 and bool(suite.model.reference_splits)

    def prepare(self, suite: SuiteContext) -> None:
        opts = self.options(suite)
        kind, extractor, ref, stats = _reference_features(suite, opts)
        if ref.labels is None:
            raise ParameterError(f"metric 'class_fid' needs labelled reference data, but "
                                 f"the {opts['split']!r} split of model "
                                 f"{suite.model_name!r} has no labels")
        reference = class_statistics(stats.features, ref.labels, ref.data_id,
                                     stats.extractor_sha256)
        info = {**_feature_info(self.name, kind, ref, stats, opts),
                "class_fid_definition": "mean over the classes generated of the FID "
                                        "between the features of the samples of class c "
                                        "and of the reference samples of class c",
                "class_fid_reference_class_counts": _counts({c: s.n for c, s in
                                                             reference.items()}),
                "class_fid_small_n": "FID is biased upward at small N: compare at equal "
                                     "per-class counts only; a class with n <= F samples "
                                     "has a singular covariance (listed in "
                                     "class_fid_singular_classes)",
                "class_fid_bootstrap": "replicates resample the samples (with their "
                                       "labels), the reference fixed"}
        suite.cache[f"metrics.{self.name}"] = (extractor, reference, opts, info)
        self.info = dict(info)

    def feature_spaces(self, suite: SuiteContext) -> list[tuple[Any, str]]:
        extractor, _, opts, _ = suite.cache[f"metrics.{self.name}"]
        return [(extractor, opts["postprocess"])]

    def samples_read(self, suite: SuiteContext) -> int:
        return 0  # the features and the intended labels alone

    def compute(self, trial: TrialContext) -> dict[str, float]:
        extractor, reference, opts, info = self._state(trial)
        if trial.labels is None:
            self.info = {**info, "class_fid_status": NO_LABELS}
            return {}
        features = trial.features(extractor, opts["postprocess"]).matrix
        result = class_fid(features, trial.labels, reference)
        info = {**info, "class_fid_class_counts": _counts(result.generated_counts)}
        if result.mean is None:
            self.info = {**info, "class_fid_status": "; ".join(result.missing.values())}
            return {}
        singular = result.rank_deficient
        self.info = {**info, "class_fid_status": "ok",
                     "class_fid_singular_classes": (", ".join(map(str, singular))
                                                    if singular else "none")}
        if trial.bootstrap is not None:
            replicates = class_fid_replicates(features, trial.labels, reference,
                                              trial.bootstrap.index_sets)
            if replicates is not None:  # else a resampled set lacks a class: no interval
                trial.bootstrap.record(self.name, replicates, minimum=0.0)
        return {self.name: result.mean,
                **{f"{self.name}_{c}": value for c, value in sorted(result.per_class.items())},
                f"{self.name}_num_samples": float(features.shape[0]),
                f"{self.name}_num_classes": float(len(result.per_class)),
                f"{self.name}_min_class_samples": float(min(result.generated_counts.values()))}


# --- improved precision and recall -------------------------------------------------------------

class _ManifoldMetric(_Configured):
    unit = "1"
    higher_is_better = True
    on_real_data = True
    DEFAULTS = {**FEATURE_DEFAULTS, "k": PRECISION_RECALL_K}
    #: Whether `compute` needs the real data's k-NN radii (precision does, recall not).
    real_manifold = False

    def applies_to(self, suite: SuiteContext) -> bool:
        return bool(suite.model.reference_splits)

    def prepare(self, suite: SuiteContext) -> None:
        opts = self.options(suite)
        k = opts["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ParameterError(f"metric {self.name!r}: k must be a positive integer, "
                                 f"got {k!r}")
        kind, extractor, ref, stats = _reference_features(suite, opts)
        if k >= stats.n:
            raise ParameterError(f"metric {self.name!r}: k = {k} needs more than {k} "
                                 f"reference samples, got {stats.n}")
        radii = None
        if self.real_manifold:  # the real data's k-NN radii: once per suite
            key = ("metrics.real_manifold", ref.data_id, stats.extractor_sha256, k)
            if key not in suite.cache:
                suite.cache[key] = knn_radii(stats.features, k, device=suite.device)
            radii = suite.cache[key]
        info = {**_feature_info(self.name, kind, ref, stats, opts), f"{self.name}_k": k,
                f"{self.name}_definition": self.definition,
                f"{self.name}_estimator": "Kynkaanniemi et al. 2019: k-NN balls around "
                                          "each point (radius: distance to its k-th "
                                          "nearest other point of its own set), "
                                          "Euclidean in float64",
                f"{self.name}_comparability": "depends on the numbers of generated and "
                                              "real samples (more points, smaller balls): "
                                              "compare at equal num_samples and "
                                              "num_reference only",
                f"{self.name}_bootstrap": self.bootstrap}
        suite.cache[f"metrics.{self.name}"] = (extractor, stats.features, radii, opts, info)
        self.info = dict(info)

    def feature_spaces(self, suite: SuiteContext) -> list[tuple[Any, str]]:
        extractor, _, _, opts, _ = suite.cache[f"metrics.{self.name}"]
        return [(extractor, opts["postprocess"])]

    def samples_read(self, suite: SuiteContext) -> int:
        return 0  # the features alone

    def _features(self, trial: TrialContext, extractor, opts: dict[str, Any]):
        return trial.features(extractor, opts["postprocess"]).matrix


class PrecisionMetric(_ManifoldMetric):
    """Improved precision: the fraction of samples inside the real data's k-NN manifold."""

    name = "precision"
    description = ("improved precision (Kynkaanniemi et al. 2019): fraction of samples "
                   "inside the real data's k-NN manifold (higher is better)")
    definition = "fraction of generated samples within the k-NN radius of some real sample"
    bootstrap = "replicates resample the generated samples, the real manifold fixed"
    real_manifold = True

    def compute(self, trial: TrialContext) -> dict[str, float]:
        extractor, real, radii, opts, info = self._state(trial)
        features = self._features(trial, extractor, opts)
        value, inside = improved_precision(real, features, radii, device=trial.suite.device)
        if trial.bootstrap is not None:
            trial.bootstrap.record(self.name, accuracy_replicates(
                inside, trial.bootstrap.index_sets), minimum=0.0)
        self.info = dict(info)
        return {self.name: value, f"{self.name}_num_samples": float(features.shape[0]),
                f"{self.name}_num_reference": float(real.shape[0])}


class RecallMetric(_ManifoldMetric):
    """Improved recall: the fraction of real data inside the samples' k-NN manifold."""

    name = "recall"
    description = ("improved recall (Kynkaanniemi et al. 2019): fraction of real data "
                   "inside the samples' k-NN manifold (higher is better)")
    definition = "fraction of real samples within the k-NN radius of some generated sample"
    bootstrap = ("none: a resampled set repeats samples, and a repeat is a neighbour at "
                 "distance 0 that shrinks the generated k-NN balls, so the replicates would "
                 "not measure recall's sampling spread")

    def compute(self, trial: TrialContext) -> dict[str, float]:
        extractor, real, _, opts, info = self._state(trial)
        features = self._features(trial, extractor, opts)
        value, _ = improved_recall(real, features, opts["k"], device=trial.suite.device)
        self.info = dict(info)
        return {self.name: value, f"{self.name}_num_samples": float(features.shape[0]),
                f"{self.name}_num_reference": float(real.shape[0])}


METRICS = (ClassAccuracyMetric, ClassFIDMetric, PrecisionMetric, RecallMetric)


@hookimpl
def harness_register_metrics(register):
    for cls in METRICS:
        register(cls())
