"""A trial's samples as PNG files, as EDM writes them (`--save-samples DIR`).

Each sample i becomes `<trial>/<i - i mod 1000:06d>/<i:06d>.png` (EDM's `generate.py`
layout: a folder per thousand), an 8-bit image of the sample quantised as EDM saves it
(`harness.metrics.pixels.edm_uint8`: `(x * 127.5 + 128).clip(0, 255)` truncated; grey
samples stay grey, one channel). The files are what another tool (clean-fid, EDM's
`fid.py`, dgm-eval) reads to measure the same samples, and what a person looks at.

A sample's value range is mapped linearly onto [-1, 1] first (the identity for the
[-1, 1] images every shipped model and diffusers pipeline produces). Only image data
can be written: (C, H, W) with C in {1, 3} and a finite value range; a suite asking
for the files from any other model is refused before anything is computed
(`check_image_data`).

Writing comes after a trial is measured and recorded; each file is written whole under
a temporary name and renamed (no torn file is ever visible; not fsynced one by one: a
crash may lose the last files, never leave a broken one), and a failure to write is a
warning of the trial, never a failed trial.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

from torch import Tensor

from ...core.model import DataSpec
from ...errors import ParameterError
from ...metrics.pixels import edm_uint8


def check_image_data(spec: DataSpec, model: str) -> None:
    """Refuse, with the reason, a model whose (decoded) samples are not images."""
    lo, hi = spec.value_range
    if len(spec.shape) != 3 or spec.shape[0] not in (1, 3):
        raise ParameterError(f"--save-samples writes images, (1 or 3, H, W); model "
                             f"{model!r} draws samples of shape {tuple(spec.shape)}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"--save-samples needs a finite value range to map to 8 "
                             f"bits; model {model!r} has {spec.value_range}")


def sample_path(folder: Path, index: int) -> Path:
    """Where sample `index` goes: EDM's folder per thousand."""
    return folder / f"{index - index % 1000:06d}" / f"{index:06d}.png"


def write_sample_images(samples: Tensor, indices: list[int], spec: DataSpec,
                        folder: Path) -> int:
    """Write `samples` (N, C, H, W), the samples `indices` of a trial, as PNG files under
    `folder`; returns how many were written."""
    from PIL import Image  # matplotlib's dependency: only when samples are written

    lo, hi = spec.value_range
    unit = (samples.detach().float().cpu() - lo) * (2.0 / (hi - lo)) - 1.0
    pixels = edm_uint8(unit)[:, :spec.shape[0]].permute(0, 2, 3, 1)  # (N, H, W, C)
    for index, image in zip(indices, pixels):
        array = image.squeeze(-1) if image.shape[-1] == 1 else image
        encoded = io.BytesIO()
        Image.fromarray(array.numpy()).save(encoded, format="PNG")
        _write_whole(sample_path(folder, index), encoded.getvalue())
    return len(indices)


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

