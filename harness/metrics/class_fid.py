"""Intra-class FID: the FID of each class's samples against the same class's reference.

For a class-conditional model, FID over all samples cannot see a model that draws good
images of the wrong class. Intra-class FID (as in Miyato & Koyama 2018, "cGANs with
projection discriminator", Sec. 4) compares, for each class c, the features of the
samples generated for c with those of the reference samples of class c, and averages:

    class_fid = (1 / |C|) sum_{c in C} FID(G_c, R_c),

C the classes generated. Each FID is `harness.metrics.fid`'s own: Gaussians with the
unbiased covariance, in float64, compared by its one Fréchet formula
(`ReferenceStats.fid_against`).

Small classes, by fid.py's policy: FID needs at least two samples a side (else there is
no covariance) and is biased upward at small N, so values are comparable at equal
per-class counts only; the counts come with the values. A class with n <= F samples (F
features) has a singular covariance: the distance is still defined (the trace of the
square root of cov1 cov2 sums the square roots of its eigenvalues, which are >= 0),
though in float64 only to ~1e-7 relative (`harness.metrics.fid.frechet_distances`), and
such classes are listed (`rank_deficient`) so that a reader knows the estimate rests on
fewer samples than dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor

from .fid import ReferenceStats


def class_statistics(features: Tensor, labels: Tensor, data_id: str = "",
                     extractor_sha256: str = "") -> dict[int, ReferenceStats]:
    """The feature statistics of each class present in `labels`, keyed by class."""
    features = features.detach().flatten(1).double().cpu()
    labels = labels.detach().cpu().long()
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels have shape {tuple(labels.shape)} for "
                         f"{features.shape[0]} feature vectors")
    return {int(c): ReferenceStats.of_features(features[labels == c],
                                               f"{data_id}:class={c}", extractor_sha256)
            for c in labels.unique().tolist()}


@dataclass(frozen=True)
class ClassFID:
    """Per-class FIDs and their mean over the classes generated.

    `mean` is None when some generated class has no value (`missing` says why); the
    per-class values that could be computed are in `per_class` all the same.
    """

    mean: Optional[float]
    per_class: dict[int, float]
    generated_counts: dict[int, int]
    reference_counts: dict[int, int]
    num_features: int
    missing: dict[int, str] = field(default_factory=dict)

    @property
    def rank_deficient(self) -> list[int]:
        """Classes whose generated or reference covariance is singular (n <= F)."""
        return [c for c in self.per_class
                if min(self.generated_counts[c], self.reference_counts[c])
                <= self.num_features]


def class_fid(features: Tensor, labels: Tensor, reference: dict[int, ReferenceStats]
              ) -> ClassFID:
    """Intra-class FID of generated `features` (N, F) whose intended classes are `labels`
    (N,), against per-class reference statistics (`class_statistics`)."""
    generated = class_statistics(features, labels)
    per_class: dict[int, float] = {}
    missing: dict[int, str] = {}
    for c, stats in generated.items():
        ref = reference.get(c)
        if ref is None:
            missing[c] = f"class {c}: no reference samples of this class"
        elif stats.n < 2 or ref.n < 2:
            missing[c] = (f"class {c}: {stats.n} generated and {ref.n} reference "
                          f"samples; FID needs at least two on each side")
        else:
            per_class[c] = stats.fid_against(ref)
    mean = None if missing or not per_class else sum(per_class.values()) / len(per_class)
    return ClassFID(mean, per_class, {c: s.n for c, s in generated.items()},
                    {c: reference[c].n for c in generated if c in reference},
                    int(features.flatten(1).shape[1]), missing)


def class_fid_replicates(features: Tensor, labels: Tensor,
                         reference: dict[int, ReferenceStats], index_sets: Tensor
                         ) -> Optional[list[float]]:
    """The mean intra-class FID of features[idx] (labels[idx]) for each row idx of
    `index_sets` (`harness.metrics.bootstrap`); None when some resampled set has a class
    without a value (too few of its samples drawn), since its mean would then average
    other classes than the estimate does."""
    classes = set(labels.unique().tolist())
    values = []
    for idx in index_sets:
        result = class_fid(features[idx], labels[idx], reference)
        if result.mean is None or set(result.per_class) != classes:
            return None
        values.append(result.mean)
    return values
