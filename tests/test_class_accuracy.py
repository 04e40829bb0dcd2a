"""Class accuracy (harness.metrics.class_accuracy) with a known classifier: a fixed linear
map whose argmax is the largest coordinate, on samples with planted classes and labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.metrics.bootstrap import Bootstrap
from harness.metrics.class_accuracy import (
    accuracy_replicates,
    class_accuracy,
    class_hits,
    classify,
    labelled_accuracy,
)

K = 4


def linear_classifier(dtype=torch.float32) -> nn.Linear:
    """logits = 2 x + 0: the predicted class is the index of the largest coordinate."""
    layer = nn.Linear(K, K).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(2 * torch.eye(K))
        layer.bias.zero_()
    return layer


def planted(n: int, wrong: int, seed: int = 0):
    """Samples whose largest coordinate is class c (5 + noise in [0, 1) against noise
    elsewhere), and labels equal to c except for `wrong` of them, moved by one class."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, K, (n,), generator=gen)
    x = torch.rand(n, K, generator=gen, dtype=torch.float64)
    x[torch.arange(n), classes] += 5.0
    labels = classes.clone()
    flipped = torch.randperm(n, generator=gen)[:wrong]
    labels[flipped] = (labels[flipped] + 1) % K
    return x, labels, classes


@pytest.mark.parametrize("n, wrong", [(100, 0), (100, 37), (1001, 250), (64, 64)])
def test_accuracy_is_the_exact_fraction_of_planted_labels(n, wrong):
    x, labels, classes = planted(n, wrong)
    predicted = classify(linear_classifier(), x, batch_size=33)  # float64 into float32
    assert torch.equal(predicted, classes)
    assert class_accuracy(predicted, labels) == (n - wrong) / n
    assert labelled_accuracy(linear_classifier(), x, labels, batch_size=7) == (n - wrong) / n


def test_hits_and_their_bootstrap_replicates():
    x, labels, _ = planted(50, 20, seed=1)
    hits = class_hits(classify(linear_classifier(), x), labels)
    assert hits.dtype == torch.bool and int(hits.sum()) == 30
    boot = Bootstrap(50, replicates=6)
    values = accuracy_replicates(hits, boot.index_sets)
    expected = [sum(bool(hits[i]) for i in idx.tolist()) / 50 for idx in boot.index_sets]
    assert values == pytest.approx(expected, abs=1e-15)


def test_a_classifier_that_is_not_a_logit_map_is_refused():
    with pytest.raises(ValueError, match=r"\(batch, num_classes\) logits"):
        classify(nn.Flatten(0), torch.zeros(3, K))


def test_labels_must_match_the_predictions():
    with pytest.raises(ValueError, match="predictions for labels of shape"):
        class_hits(torch.zeros(3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
