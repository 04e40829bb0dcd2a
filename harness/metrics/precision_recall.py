"""Improved precision and recall (Kynkaanniemi et al. 2019), from k-NN manifolds.

A set of feature vectors {y_j} stands for the manifold it covers: the union of the
balls B(y_j, r_j), each radius r_j the distance from y_j to its k-th nearest neighbour
in its own set (y_j itself left out; k = 3 in the paper, Sec. 2). Then, for real
features R and generated features G,

    precision = |{g in G : g inside manifold(R)}| / |G|   (how much of G is realistic)
    recall    = |{r in R : r inside manifold(G)}| / |R|   (how much of R G covers)

where x is inside manifold(Y) when |x - y_j| <= r_j for some j (Eq. 1-3). Both lie in
[0, 1], higher is better. Both depend on the set sizes (a larger set has smaller radii):
compare at equal numbers of real and generated samples only.

Distances are Euclidean in float64, computed in blocks of at most `BLOCK_ELEMENTS`
pairs, so that 10,000 x 10,000 points need a few tens of MB rather than 800.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

#: The paper's neighbourhood size (Kynkaanniemi et al. 2019, Sec. 2: k = 3).
DEFAULT_K = 3
#: Pairwise distances held at once (2^22 float64 values: 32 MiB).
BLOCK_ELEMENTS = 2**22

Device = Union[str, torch.device, None]


def _flat(x: Tensor, device: Device) -> Tensor:
    return x.detach().flatten(1).to(device=device or x.device, dtype=torch.float64)


def _rows_per_block(columns: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, columns))


def knn_radii(points: Tensor, k: int = DEFAULT_K, *, block_elements: int = BLOCK_ELEMENTS,
              device: Device = None) -> Tensor:
    """(N,) float64: the distance from each point to its k-th nearest other point.

    A point's own distance does not count (a duplicate of it does: it is another point
    at distance 0). Needs N > k.
    """
    x = _flat(points, device)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k-NN radii need 1 <= k < number of points; got k = {k} for "
                         f"{n} points")
    radii = torch.empty(n, dtype=torch.float64, device=x.device)
    step = _rows_per_block(n, block_elements)
    for start in range(0, n, step):
        dist = torch.cdist(x[start:start + step], x)
        rows = torch.arange(dist.shape[0], device=x.device)
        dist[rows, rows + start] = torch.inf  # not its own neighbour
        radii[start:start + step] = dist.topk(k, dim=1, largest=False).values[:, -1]
    return radii.cpu()


def inside_manifold(query: Tensor, points: Tensor, radii: Tensor, *,
                    block_elements: int = BLOCK_ELEMENTS, device: Device = None) -> Tensor:
    """(Nq,) bool: whether each query lies within radii[j] of some points[j]."""
    q, y = _flat(query, device), _flat(points, device)
    if q.shape[1] != y.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features, the manifold's points "
                         f"{y.shape[1]}")
    r = radii.to(device=y.device, dtype=torch.float64)
    out = torch.empty(q.shape[0], dtype=torch.bool, device=y.device)
    step = _rows_per_block(y.shape[0], block_elements)
    for start in range(0, q.shape[0], step):
        out[start:start + step] = (torch.cdist(q[start:start + step], y) <= r).any(1)
    return out.cpu()


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall, and which samples were inside the other manifold.

    `generated_inside[i]`: generated sample i lies in the real manifold (their mean is
    the precision); `real_inside[j]`: real sample j lies in the generated manifold.
    """

    precision: float
    recall: float
    k: int
    num_real: int
    num_generated: int
    generated_inside: Tensor
    real_inside: Tensor


def precision_recall(real: Tensor, generated: Tensor, k: int = DEFAULT_K, *,
                     real_radii: Optional[Tensor] = None,
                     block_elements: int = BLOCK_ELEMENTS,
                     device: Device = None) -> PrecisionRecall:
    """Precision and recall of `generated` features (or samples) against `real` ones.

    `real_radii` (from `knn_radii(real, k)`) may be passed when several sets are compared
    with the same real set, so that they are computed once.
    """
    options = {"block_elements": block_elements, "device": device}
    if real_radii is None:
        real_radii = knn_radii(real, k, **options)
    precision, generated_inside = improved_precision(real, generated, real_radii, **options)
    recall, real_inside = improved_recall(real, generated, k, **options)
    return PrecisionRecall(precision, recall, k, real.shape[0], generated.shape[0],
                           generated_inside, real_inside)


def improved_precision(real: Tensor, generated: Tensor, real_radii: Tensor, *,
                       block_elements: int = BLOCK_ELEMENTS, device: Device = None
                       ) -> tuple[float, Tensor]:
    """(precision, generated_inside): the fraction of generated points inside the real
    manifold, whose radii `real_radii` are `knn_radii(real, k)`."""
    if real_radii.shape != (real.shape[0],):
        raise ValueError(f"real_radii has shape {tuple(real_radii.shape)}, expected "
                         f"({real.shape[0]},)")
    inside = inside_manifold(generated, real, real_radii, block_elements=block_elements,
                             device=device)
    return float(inside.double().mean()), inside


def improved_recall(real: Tensor, generated: Tensor, k: int = DEFAULT_K, *,
                    block_elements: int = BLOCK_ELEMENTS, device: Device = None
                    ) -> tuple[float, Tensor]:
    """(recall, real_inside): the fraction of real points inside the generated
    manifold (k-NN radii of the generated points)."""
    options = {"block_elements": block_elements, "device": device}
    inside = inside_manifold(real, generated, knn_radii(generated, k, **options), **options)
    return float(inside.double().mean()), inside
