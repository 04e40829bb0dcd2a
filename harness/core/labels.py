"""Per-sample class labels: sample i's label depends only on (seed, i).

Balanced labels (the default) deal the classes out in blocks: the indices
b K .. b K + K - 1 (K classes) get the K classes in an order shuffled by the block's own
random numbers, so every block holds each class exactly once, the N samples of a run
(indices 0 .. N - 1, or any window starting at a multiple of K) are balanced to within one
per class, and no label depends on the batch size, the sharding or the device. The shuffle of block b sorts the K words

    Philox4x32-10 word 0 at counter (j, LABEL_DRAW, b mod 2^32, b // 2^32), j < K,

under the run's key (seed mod 2^32, seed // 2^32): the noise streams
(`harness.core.noise`) use the same key with draw numbers k < LABEL_DRAW at the sample's
index, so labels and noise never share a counter. Given labels (a suite's list) are dealt
out in turn instead: sample i gets given[i mod len(given)].
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from ..errors import ParameterError
from .philox import MASK32, philox_words

#: The counter word that marks a label draw (noise draws number from 0 and never get here).
LABEL_DRAW = MASK32

#: How a suite asks for labels: "balanced", or the classes to deal out in turn.
LabelRule = Union[str, Sequence[int]]


def sample_labels(seed: int, indices: Sequence[int], num_classes: int,
                  rule: LabelRule = "balanced", device: torch.device | str = "cpu"
                  ) -> Tensor:
    """The class of each sample in `indices` of the run with base `seed`: (B,) int64."""
    if num_classes < 1:
        raise ParameterError(f"labels need a conditional model, got num_classes = "
                             f"{num_classes}")
    if not 0 <= int(seed) < 2**64:
        raise ParameterError(f"seed must be in [0, 2^64), got {seed}")
    indices = [int(i) for i in indices]
    if indices and min(indices) < 0:
        raise ParameterError("sample indices must be >= 0")
    if isinstance(rule, str):
        if rule != "balanced":
            raise ParameterError(f"labels must be 'balanced' or a list of classes, "
                                 f"got {rule!r}")
        return _balanced(int(seed), indices, num_classes).to(device)
    given = list(rule)
    if not given or any(isinstance(c, bool) or not isinstance(c, numbers.Integral)
                        or not 0 <= c < num_classes for c in given):
        raise ParameterError(f"given labels must be classes 0 .. {num_classes - 1}, "
                             f"got {list(rule)}")
    table = torch.tensor([int(c) for c in given], dtype=torch.int64)
    return table[torch.tensor(indices, dtype=torch.int64) % len(given)].to(device)


def _balanced(seed: int, indices: list[int], num_classes: int) -> Tensor:
    if not indices:
        return torch.empty(0, dtype=torch.int64)
    index = torch.tensor(indices, dtype=torch.int64) if max(indices) < 2**63 else None
    if index is None:
        raise ParameterError("sample indices for labels must be below 2^63")
    blocks, slot = torch.unique(index // num_classes, return_inverse=True)
    counter = torch.empty((4, len(blocks), num_classes), dtype=torch.int64)
    counter[0] = torch.arange(num_classes)
    counter[1] = LABEL_DRAW
    counter[2] = (blocks & MASK32)[:, None]
    counter[3] = (blocks >> 32)[:, None]
    words = philox_words(counter, (seed & MASK32, seed >> 32))[0]
    # Class order of each block: the classes sorted by their words (stable for ties).
    order = torch.argsort(words, dim=1, stable=True)
    return order[slot, index % num_classes]


def check_rule(rule: Optional[LabelRule], num_classes: int) -> None:
    """Refuse a label rule the model cannot follow, before anything is computed."""
    if rule is None or isinstance(rule, str):
        sample_labels(0, [], num_classes, "balanced" if rule is None else rule)
    else:
        sample_labels(0, [0], num_classes, rule)
