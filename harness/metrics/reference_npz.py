"""Published reference statistics: a feature Gaussian (mu, sigma) read from an `.npz`.

The reference pipelines publish each dataset's FID reference as the mean and covariance
of its features, so that FID can be computed without the dataset: EDM's `fid.py ref`
writes `np.savez(dest, mu=mu, sigma=sigma)` (e.g. `cifar10-32x32.npz`), pytorch-fid and
clean-fid write the same two keys, and ADM's `VIRTUAL_*.npz` reference batches hold
`mu` and `sigma` beside `mu_s`/`sigma_s` (spatial features) and `arr_0` (the images
themselves, not features), of which only `mu` and `sigma` are read here. EDM2's
references are pickles: this harness never unpickles, so they are not read.

A file holds no record of the extractor or the preprocessing it was made with, nor of
its number of images: that the file belongs to the feature space chosen is the user's
claim, checked only as far as the feature dimension goes (a mismatch is refused), and
its sha256 is logged beside the extractor's. Only FID can use it: KID, FID_inf,
bootstrap replicates, precision and recall need the reference set's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import ParameterError
from ..models.checkpoint import file_sha256


@dataclass(frozen=True)
class PublishedReference:
    """A reference Gaussian read from `path`: float64 `mean` (F,) and `cov` (F, F).

    It stands where `ReferenceStats` does for FID (`ReferenceStats.fid_against`); `n`,
    the number of reference images, is not recorded in the files (None) and `features`
    are absent.
    """

    path: str
    sha256: str
    mean: Tensor
    cov: Tensor
    n: Optional[int] = None
    features: None = None

    @property
    def data_id(self) -> str:
        return f"npz:{Path(self.path).name}:{self.sha256[:16]}"


def reference_npz(path: Union[str, Path], num_features: int) -> PublishedReference:
    """The `mu` and `sigma` of an `.npz` file, refused unless they are a Gaussian in
    `num_features` dimensions (the extractor's)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"reference statistics {path} not found")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ("mu", "sigma") if key not in archive.files]
        if missing:
            raise ParameterError(
                f"reference statistics {path} have no {' or '.join(missing)} (keys: "
                f"{', '.join(archive.files) or 'none'}); FID needs mu and sigma as EDM, "
                f"ADM and pytorch-fid write them")
        mean = torch.from_numpy(np.asarray(archive["mu"], dtype=np.float64))
        cov = torch.from_numpy(np.asarray(archive["sigma"], dtype=np.float64))
    if mean.shape != (num_features,) or cov.shape != (num_features, num_features):
        raise ParameterError(
            f"reference statistics {path} are in another feature space: mu "
            f"{tuple(mean.shape)} and sigma {tuple(cov.shape)}, but the extractor gives "
            f"{num_features} features (Inception-v3 pool3: 2048, DINOv2 ViT-L/14: 1024)")
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise ParameterError(f"reference statistics {path} hold non-finite values")
    return PublishedReference(str(path), file_sha256(path), mean, cov)
