"""The feature space every set metric of a suite compares samples in, chosen once.

FID and KID (`harness.metrics.fid`), class-conditional FID and improved precision and
recall all measure samples in one space, resolved from a metric's options:

* `extractor = "auto"` (the default): InceptionV3 when `inception_weights` names a local
  file, else the model's own extractor (`model.feature_extractor(device)`), else the
  flattened samples (`IdentityFeatures`, for low-dimensional data);
* `"model"`, `"identity"`: that one, or a `ParameterError` saying why not;
* `"inception"`: FID's Inception-v3 from `inception_weights` (torch-fidelity's
  `weights-inception-2015-12-05-6726825d.pth`), with the reference pipeline's preprocessing
  (`harness.metrics.fid`);
* `"dinov2"`: DINOv2 ViT-L/14 from `dinov2_weights` (`dinov2_vitl14_pretrain.pth`), with
  EDM2's preprocessing (`harness.metrics.dinov2`): FD_DINOv2 when the metric is FID.

`inception_sha256` and `dinov2_sha256`, when given, are the weights files' expected
sha256: another file is refused before it is loaded. Each extractor's `preprocess` and
`weights_sha256` ("none" for the model's own and the identity) are logged by the
metrics (`feature_info`).

The extractor is kept in the suite's cache under keys shared by every metric, so that
the metrics of a suite use the very same module (and the same on-disk reference cache,
keyed by its `sha256`). `postprocess` (`harness.metrics.trial_features`, where a trial's
features are taken) is what is done to samples before: clamped to the data's value
range ("clamp"), also rounded to its quantisation levels ("quantize"), or left alone
("none").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import ParameterError
from .dinov2 import load_dinov2
from .fid import Float64Features, IdentityFeatures, inception_extractor

if TYPE_CHECKING:  # the metric contract reads trials' features through this module
    from .metric import SuiteContext

#: Values of the `extractor` option.
EXTRACTORS = ("auto", "identity", "model", "inception", "dinov2")
#: The options `feature_space` reads, with their defaults.
FEATURE_SPACE_DEFAULTS = {"extractor": "auto", "inception_weights": None,
                          "inception_sha256": None, "dinov2_weights": None,
                          "dinov2_sha256": None}
#: Values of the `postprocess` option.
POSTPROCESS = ("none", "clamp", "quantize")


def feature_space(suite: SuiteContext, opts: dict[str, Any]) -> tuple[str, nn.Module]:
    """(logged name, feature module) for the options of `FEATURE_SPACE_DEFAULTS`.

    `auto` is InceptionV3 when weights are given, else the model's own extractor, else the
    flattened samples (`identity`).
    """
    kind = opts["extractor"]
    if kind not in EXTRACTORS:
        raise ParameterError(f"extractor must be one of {', '.join(EXTRACTORS)}, got {kind!r}")
    if kind == "auto":
        kind = "inception" if opts["inception_weights"] else "model"
    if kind == "model":
        key = ("metrics.model_features",)
        if key not in suite.cache:
            own = suite.model.feature_extractor(suite.device)
            suite.cache[key] = None if own is None else (
                getattr(own, "name", None) or "model", Float64Features(own))
        if suite.cache[key] is not None:
            return suite.cache[key]
        if opts["extractor"] == "model":
            raise ParameterError(f"model {suite.model_name!r} has no feature extractor of "
                                 f"its own; use extractor = 'identity', 'inception' or "
                                 f"'dinov2'")
        kind = "identity"
    weights = opts.get(f"{kind}_weights")
    expected = opts.get(f"{kind}_sha256")
    key = ("metrics.extractor", kind, weights, expected)
    if key not in suite.cache:
        if kind == "identity":
            suite.cache[key] = IdentityFeatures(suite.model.output_spec.dim)
        elif not weights:
            raise ParameterError(f"extractor {kind!r} needs {kind}_weights = PATH (a local "
                                 f"file: weights are never downloaded)")
        elif kind == "inception":
            suite.cache[key] = inception_extractor(weights, expected_sha256=expected
                                                   ).to(suite.device)
        else:
            dinov2 = load_dinov2(weights, expected_sha256=expected)
            suite.cache[key] = Float64Features(dinov2).to(suite.device)
    return kind, suite.cache[key]


def feature_info(name: str, kind: str, extractor: nn.Module) -> dict[str, Any]:
    """The logged conventions of metric `name`'s feature space."""
    return {f"{name}_extractor": kind, f"{name}_extractor_sha256": str(extractor.sha256),
            f"{name}_preprocess": getattr(extractor, "preprocess", None) or "none",
            f"{name}_weights_sha256": getattr(extractor, "weights_sha256", None) or "none"}
