"""Samples as the 8-bit RGB images that the reference FID pipelines measure.

EDM (`generate.py`) and EDM2 (`training/encoders.py`) write a sample x in [-1, 1] as
the 8-bit value `(x * 127.5 + 128).clip(0, 255)` cast to uint8, which truncates: round
half up of 127.5 (x + 1), so -1 -> 0 and 1 -> 255 and each level gets a bin of equal
width. Their detectors (Inception-v3, DINOv2) then see those integers. The harness's
extractors take the same integers (`edm_uint8`) from the samples, so that features of
generated samples match those of samples saved as PNG files and read back.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The name of this quantisation, logged with every extractor that uses it.
EDM_UINT8 = "edm_uint8"


def edm_uint8(x: Tensor) -> Tensor:
    """(N, C, H, W) samples in [-1, 1], C in {1, 3} -> (N, 3, H, W) uint8 as EDM saves them.

    Grey images are repeated to RGB, as an RGB PNG of a grey image would hold them.
    """
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, got shape {tuple(x.shape)}")
    images = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
