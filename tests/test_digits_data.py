"""The digits data: fixed split sizes, disjoint and stratified, exactly 17 grey levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.models import digits
from harness.errors import ParameterError


def test_split_sizes_are_fixed():
    train_x, train_y = digits.load_split("train")
    test_x, test_y = digits.load_split("test")
    assert train_x.shape == (1442, 1, 8, 8) and train_y.shape == (1442,)
    assert test_x.shape == (355, 1, 8, 8) and test_y.shape == (355,)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    all_x, _ = digits.load_split("all")
    assert len(all_x) == digits.NUM_IMAGES == 1797


def test_splits_are_disjoint_cover_everything_and_are_stable():
    _, labels = digits._raw()
    train, test = digits.split_indices(labels)
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    # The rule is a pure function of the data set order: these are its first test images.
    assert test[:8].tolist() == [33, 36, 37, 40, 44, 47, 51, 58]
    again_train, again_test = digits.split_indices(labels.copy())
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)


def test_split_is_stratified_every_fifth_image_per_class():
    _, labels = digits._raw()
    _, test = digits.split_indices(labels)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        assert np.array_equal(np.intersect1d(members, test), members[4::5])


def test_values_are_exactly_the_17_levels():
    levels = torch.arange(17, dtype=torch.float32) / 8 - 1
    for split in ("train", "test"):
        x, _ = digits.load_split(split)
        assert torch.equal(torch.unique(x), levels)
    assert digits.DIGITS_SPEC.levels == 17
    assert digits.DIGITS_SPEC.bin_width == pytest.approx(1 / 8)
    assert digits.DIGITS_SPEC.shape == (1, 8, 8)


def test_scale_and_quantize_round_trip():
    x, _ = digits.load_split("test")
    assert torch.equal(digits.scale(digits.unscale(x)), x)
    jitter = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5
    noisy = x + 0.1 * jitter  # under half a bin (1/16) from the level
    assert torch.equal(digits.quantize(noisy), x)
    assert digits.quantize(torch.tensor([-3.0, 3.0])).tolist() == [-1.0, 1.0]


def test_labels_and_description():
    _, train_y = digits.load_split("train")
    assert torch.bincount(train_y).min() > 130
    described = digits.describe()
    assert described["train_size"] == 1442 and described["test_size"] == 355
    assert described["fingerprint"] == digits.split_fingerprint()
    assert "k % 5 == 4" in described["split_rule"]


def test_unknown_split_is_refused():
    with pytest.raises(ParameterError, match="train, test, all"):
        digits.load_split("validation")  # type: ignore[arg-type]


def test_the_data_are_scikit_learns_load_digits():
    # The harness reads load_digits' file itself (no scikit-learn import at start-up):
    # the images and labels must be exactly what load_digits gives.
    from sklearn.datasets import load_digits

    images, labels = digits._raw()
    reference = load_digits()
    assert np.array_equal(images, reference.images)
    assert np.array_equal(labels, reference.target)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
