"""Class accuracy of conditional samples: does a classifier see the class asked for?

A class-conditional sampler (with or without guidance) is asked for class y_i for
sample i; a fixed classifier of the data (`ScoreModel.classifier`) predicts
argmax_c logits_c(x_i), and the accuracy is the fraction of samples where the two agree,
(1/N) sum_i [argmax logits(x_i) = y_i]. It is bounded by the classifier's own accuracy
on real data of the same classes, so the classifier's accuracy on labelled reference
data is measured alongside (`labelled_accuracy`): no sampler can be expected to exceed
it. Guidance typically raises the accuracy while lowering diversity (Dhariwal & Nichol
2021; Ho & Salimans 2022), which is why it is read together with FID and recall.

The accuracy is a mean of per-sample indicators, so its bootstrap replicates cost one
indexing each (`accuracy_replicates`).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

Device = Union[str, torch.device, None]


def _module_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


@torch.no_grad()
def classify(classifier: nn.Module, samples: Tensor, batch_size: int = 500,
            device: Device = None) -> Tensor:
    """(N,) int64 on the CPU: argmax of the classifier's logits for each sample.

    Batches go to `device` (default: the classifier's) in the classifier's own dtype.
    """
    dtype, own = _module_dtype_device(classifier)
    device = device if device is not None else own
    parts = []
    for start in range(0, samples.shape[0], batch_size):
        logits = classifier(samples[start:start + batch_size].to(device=device, dtype=dtype))
        if logits.ndim != 2 or logits.shape[0] != min(batch_size, samples.shape[0] - start):
            raise ValueError(f"the classifier must return (batch, num_classes) logits, "
                             f"got shape {tuple(logits.shape)}")
        parts.append(logits.argmax(1).cpu())
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def class_hits(predicted: Tensor, labels: Tensor) -> Tensor:
    """(N,) bool: where the predicted class is the intended one."""
    if predicted.shape != labels.shape:
        raise ValueError(f"{tuple(predicted.shape)} predictions for labels of shape "
                         f"{tuple(labels.shape)}")
    return predicted.cpu() == labels.cpu().long()


def class_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """The fraction of samples whose predicted class is the intended one."""
    hits = class_hits(predicted, labels)
    if hits.numel() == 0:
        raise ValueError("accuracy of no samples")
    return float(hits.double().mean())


def accuracy_replicates(hits: Tensor, index_sets: Tensor) -> list[float]:
    """The accuracy of each resampled set: the mean of hits[idx] for each row idx."""
    return hits.double()[index_sets].mean(1).tolist()


def labelled_accuracy(classifier: nn.Module, data: Tensor, labels: Tensor,
                      batch_size: int = 500, device: Device = None) -> float:
    """The classifier's accuracy on labelled data (its ceiling on samples of them)."""
    return class_accuracy(classify(classifier, data, batch_size, device), labels)
