"""The 8x8 handwritten digits data set, its fixed train/test split and its scaling.

Source: `sklearn.datasets.load_digits`, the test part of the UCI "Optical Recognition of
Handwritten Digits" set (Alpaydin & Kaynak 1998): 1,797 grey images of 8x8 pixels whose
values are the integers 0..16, i.e. 17 grey levels. It ships inside scikit-learn, so
nothing is downloaded.

Split rule (`SPLIT_RULE`, a pure function of the data set order, no random numbers, so it
is the same on every machine and every library version): within each class, the images
are taken in data set order and numbered k = 0, 1, 2, ...; image k goes to the test split
when k % 5 == 4 and to the training split otherwise. That is a stratified 80/20 split
with 1,442 training and 355 test images. Both splits keep data set order.

Scaling: pixel value v in 0..16 becomes x = v / 8 - 1, so the 17 levels are exactly
-1, -7/8, ..., 7/8, 1 (all exactly representable in float32) and the bin width is 1/8.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ParameterError
from ..core.model import DataSpec

#: What one sample looks like: one channel, 8x8, 17 equally spaced levels in [-1, 1].
DIGITS_SPEC = DataSpec(shape=(1, 8, 8), value_range=(-1.0, 1.0), levels=17)

NUM_IMAGES = 1797
#: Every `TEST_EVERY`-th image of each class (counting from 0, remainder `TEST_REMAINDER`)
#: is a test image.
TEST_EVERY = 5
TEST_REMAINDER = 4
SPLIT_RULE = (
    "sklearn.datasets.load_digits; per class, in data set order, the k-th image "
    f"(k = 0, 1, ...) is a test image iff k % {TEST_EVERY} == {TEST_REMAINDER}, "
    "otherwise a training image; both splits keep data set order"
)
SCALING = "x = v / 8 - 1 for pixel values v in 0..16"

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """Pixel values (N, 8, 8) as uint8 in 0..16 and labels (N,) as int64; read-only.

    Read from the file `load_digits` reads (scikit-learn's `datasets/data/digits.csv.gz`:
    64 pixel values and the label per row), without importing scikit-learn, whose import
    takes seconds and loads pandas: a dry run resolves the real-data floor from these."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("the digits data come with scikit-learn, which is not installed")
    table = np.loadtxt(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz",
                       delimiter=",")
    images = table[:, :-1].reshape(-1, 8, 8).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    if (images.shape != (NUM_IMAGES, 8, 8)
            or not np.array_equal(images, table[:, :-1].reshape(-1, 8, 8))):
        raise RuntimeError("sklearn's digits data are not the expected 1797 integer images")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into the data set for the labels in data set order.

    Pure function of the labels: see `SPLIT_RULE`. Indices are sorted ascending.
    """
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    is_test = rank % TEST_EVERY == TEST_REMAINDER
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def scale(values: np.ndarray | Tensor) -> Tensor:
    """Pixel values 0..16 to float32 in [-1, 1] (exact: every level is a multiple of 1/8)."""
    values = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    return values / 8 - 1


def unscale(x: Tensor) -> Tensor:
    """The inverse of `scale`, rounded to the nearest level and clipped to 0..16."""
    return ((x + 1) * 8).round().clamp(0, 16)


def quantize(x: Tensor) -> Tensor:
    """Round samples in the [-1, 1] scale to the nearest of the 17 levels, clipping first."""
    return unscale(x) / 8 - 1


def load_split(split: Split = "train") -> tuple[Tensor, Tensor]:
    """(images, labels) of one split: float32 (N, 1, 8, 8) in [-1, 1] and int64 (N,).

    `split` is "train" (1,442 images), "test" (355) or "all" (1,797). Fresh tensors are
    returned on each call, so callers may modify them.
    """
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    images, labels = _raw()
    if split == "all":
        index = np.arange(len(labels))
    else:
        train, test = split_indices(labels)
        index = train if split == "train" else test
    x = scale(images[index]).unsqueeze(1)
    y = torch.as_tensor(labels[index].copy())
    return x, y


def split_fingerprint() -> str:
    """sha256 of the test indices and all pixel values: changes iff the split or data do.

    Recorded in manifests so a checkpoint can tell it was trained on the same split.
    """
    images, labels = _raw()
    _, test = split_indices(labels)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(test.astype(np.int64).tobytes())
    return digest.hexdigest()


def data_std(split: Split = "train") -> float:
    """Standard deviation of all pixel values of a split in the [-1, 1] scale.

    This is how `sigma_data` of the EDM preconditioning is chosen (see `harness.models.unet`).
    """
    x, _ = load_split(split)
    return float(x.double().std())


def describe() -> dict[str, object]:
    """What a manifest records about the data: source, split rule, scaling, sizes."""
    _, labels = _raw()
    train, test = split_indices(labels)
    return {
        "dataset": "sklearn.datasets.load_digits",
        "split_rule": SPLIT_RULE,
        "scaling": SCALING,
        "train_size": int(len(train)),
        "test_size": int(len(test)),
        "shape": list(DIGITS_SPEC.shape),
        "levels": DIGITS_SPEC.levels,
        "fingerprint": split_fingerprint(),
    }
