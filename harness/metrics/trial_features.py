"""A trial's samples in a feature space: extracted once, read by every set metric.

FID and its bootstrap replicates, FID_inf, KID and its replicates, class FID, precision
and recall all compare the features of a trial's samples with a reference set's. The
first of them to ask for the features of a trial in a feature space extracts them; the
others read what it left (`TrialContext.features`), so a trial's samples go through each
extractor once, and every metric is a function of those features and the reference
statistics alone.

A feature space is named by the extractor's `sha256` (its weights, as the on-disk
reference cache names it) and by the `postprocess` applied to the samples first
(`harness.metrics.feature_space`). For each, `SampleFeatures` keeps

* `local`: the features of this process's share of the samples (`local_rows`), float64:
  under torchrun each process extracts only its own share;
* `stats`: the float64 moments of every process's features (n, sum of x, sum of x x^T,
  summed over processes in one collective: `ReferenceStats`, whose mean and unbiased
  covariance are FID's Gaussian), as EDM's `fid.py` accumulates them;
* `matrix`: every sample's features, (N, F) float64 in index order, gathered from the
  processes, for the metrics that need each feature vector (KID, FID_inf, replicates,
  class FID, precision and recall).

`stats` and `matrix` are computed when first read, and each is a collective under
torchrun: every process runs every metric in the same order (`harness.metrics.metric`),
so every process first reads them in the same metric. Extraction is wrapped in
`shared_failure`, so that an extractor failing on one process stops them all.

A streamed trial's features were extracted as its batches were drawn
(`harness.metrics.streamed_features`), in the same chunks of this process's rows, so they
are the very numbers extraction here would give; only the spaces its metrics declared
exist, and asking for another is refused (its samples are gone).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

from torch import Tensor, nn

from ..core.distributed import gather_concat, local_rows, shared_failure
from ..core.model import ScoreModel
from ..errors import ParameterError
from .fid import ReferenceStats, extract
from .sharded import FeatureMoments


def postprocess(samples: Tensor, model: ScoreModel, how: str) -> Tensor:
    """Samples clamped (and for "quantize", rounded to the levels) as the model's data
    (its decoded images for a latent model: `ScoreModel.output_spec`)."""
    spec = model.output_spec
    lo, hi = spec.value_range
    if how == "none" or not (math.isfinite(lo) and math.isfinite(hi)):
        return samples
    samples = samples.clamp(lo, hi)
    if how == "quantize" and spec.levels is not None:
        width = spec.bin_width
        samples = lo + ((samples - lo) / width).round() * width
    elif how not in ("clamp", "quantize"):
        raise ParameterError(f"postprocess must be none, clamp or quantize, got {how!r}")
    return samples


class SampleFeatures:
    """The features of one trial's samples in one feature space (module docstring)."""

    def __init__(self, local: Tensor, extractor_sha256: str):
        self.local = local
        self.extractor_sha256 = extractor_sha256

    @functools.cached_property
    def stats(self) -> ReferenceStats:
        """n, sum of x and sum of x x^T over every process's samples, float64."""
        return FeatureMoments.of(self.local).all_reduce().as_stats(self.extractor_sha256)

    @functools.cached_property
    def matrix(self) -> Tensor:
        """(N, F) float64: every sample's features, in index order."""
        return gather_concat(self.local)


class TrialFeatures:
    """The features of one trial's samples, per feature space, each extracted once."""

    def __init__(self, samples: Tensor, model: ScoreModel,
                 streamed: Optional[dict[tuple[str, str], SampleFeatures]] = None):
        self.samples, self.model = samples, model
        self.streamed = streamed is not None
        self.spaces: dict[tuple[str, str], SampleFeatures] = dict(streamed or {})
        #: Passes of the samples through an extractor so far: one per feature space.
        self.extractions = 0

    def get(self, extractor: nn.Module, how: str = "clamp") -> SampleFeatures:
        """The samples' features in `extractor`'s space after `postprocess(.., how)`."""
        key = (str(extractor.sha256), how)
        if key not in self.spaces and self.streamed:
            raise ParameterError(
                f"a streamed trial has no features in the space of extractor "
                f"{key[0][:12]} with postprocess {how!r}: a metric that reads features "
                f"declares their spaces (`Metric.feature_spaces`)")
        if key not in self.spaces:
            with shared_failure():  # before any collective, on every process
                rows = postprocess(local_rows(self.samples), self.model, how)
                local = extract(extractor, rows)
            self.extractions += 1
            self.spaces[key] = SampleFeatures(local, key[0])
        return self.spaces[key]
