"""The feature space every set metric of a suite compares samples in, chosen once.

FID and KID (`harness.metrics.fid`), class-conditional FID and improved precision and
recall all measure samples in one space, resolved from a metric's options:

* `extractor = "auto"` (the default): InceptionV3 when `inception_weights` names a local
  file, else the model's own extractor (`model.feature_extractor(device)`), else the
  flattened samples (`IdentityFeatures`, for low-dimensional data);
* `"model"`, `"identity"`, `"inception"`: that one, or a `ParameterError` saying why not.

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
from .fid import Float64Features, IdentityFeatures, inception_extractor

if TYPE_CHECKING:  # the metric contract reads trials' features through this module
    from .metric import SuiteContext

#: Values of the `extractor` option.
EXTRACTORS = ("auto", "identity", "model", "inception")
#: Values of the `postprocess` option.
POSTPROCESS = ("none", "clamp", "quantize")


def feature_space(suite: SuiteContext, opts: dict[str, Any]) -> tuple[str, nn.Module]:
    """(logged name, feature module) for options `extractor` and `inception_weights`.

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
                                 f"its own; use extractor = 'identity' or 'inception'")
        kind = "identity"
    key = ("metrics.extractor", kind, opts["inception_weights"])
    if key not in suite.cache:
        if kind == "identity":
            suite.cache[key] = IdentityFeatures(suite.model.data.dim)
        elif not opts["inception_weights"]:
            raise ParameterError("extractor 'inception' needs inception_weights = PATH")
        else:
            suite.cache[key] = inception_extractor(opts["inception_weights"]).to(suite.device)
    return kind, suite.cache[key]
