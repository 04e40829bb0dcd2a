"""Fréchet distance (FID) and kernel distance (KID) with pluggable feature extractors.

FID (Heusel et al. 2017) fits Gaussians to the features of real and generated samples,
d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)); KID (Binkowski et al. 2018) is
the unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.

FID is computed here, as EDM's `fid.py` does: each set's features are summed into float64
moments (n, sum of x, sum of x x^T: `ReferenceStats`, which sum over processes), and one
formula, `frechet_distances`, turns two sets of moments into the distance: the FID of a
trial, of each bootstrap replicate, of FID_inf's subsets and of each class. KID's subsets
are drawn by torchmetrics (`KernelInceptionDistance`, from features). The extractors:

* `IdentityFeatures`: the flattened samples themselves, for low-dimensional oracles;
* `digits_extractor`: the shipped digits classifier (`harness.models.pretrained`), imported only
  when asked for;
* `inception_extractor`: InceptionV3 from a weights file the user has locally
  (torchmetrics' `feature_extractor_weights_path`); nothing is ever downloaded. Its
  preprocessing is the reference pipeline's (EDM's `fid.py`, whose TF-ported network
  torch-fidelity reproduces): samples quantised as EDM saves them
  (`harness.metrics.pixels.edm_uint8`), resized to 299 x 299 by TensorFlow 1's bilinear
  resize (align_corners=False without half-pixel centres, no antialias), then scaled to
  (x - 128) / 128. clean-fid (mode "clean") resizes each channel of the uint8 image with
  PIL's bicubic filter in float32 instead, which moves FID: numbers from the two
  pipelines are not comparable.

Every extractor here returns float64 features. Each has a `sha256` naming its weights
(for Inception and DINOv2 the weights and the preprocessing; `weights_sha256` the file):
reference statistics are cached on disk per (data identity, extractor hash), so a change
of either recomputes them (pitfall: "pipeline drift"). FID is biased upward at small N:
compare at equal N only; N is returned with every value.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from ..errors import ParameterError
from ..models.checkpoint import file_sha256
from .pixels import EDM_UINT8, edm_uint8

PathLike = Union[str, Path]
CACHE_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else `~/.cache/harness`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "harness")


# --- feature extractors -------------------------------------------------------------------

class IdentityFeatures(nn.Module):
    """Samples flattened to (N, D) float64: FID/KID on the raw coordinates (oracles)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = int(dim)
        self.sha256 = hashlib.sha256(f"identity:{dim}".encode()).hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).double()


class Float64Features(nn.Module):
    """Wraps a feature extractor so that its features come out as float64, eval mode always.

    `sha256` and `num_features` are taken from the wrapped module (which must have them),
    and so are `preprocess` (how samples become its input) and `weights_sha256` where it
    has them (else None).
    """

    def __init__(self, extractor: nn.Module, sha256: Optional[str] = None,
                 num_features: Optional[int] = None):
        super().__init__()
        self.extractor = extractor.eval()
        self.sha256 = sha256 or getattr(extractor, "sha256")
        self.num_features = int(num_features or getattr(extractor, "num_features"))
        self.preprocess = getattr(extractor, "preprocess", None)
        self.weights_sha256 = getattr(extractor, "weights_sha256", None)

    def train(self, mode: bool = True) -> "Float64Features":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x).flatten(1).double()


def digits_extractor(device: Union[str, torch.device] = "cpu") -> Float64Features:
    """The shipped digits classifier's feature layer (N, 1, 8, 8) in [-1, 1] -> (N, F)."""
    from ..models.pretrained import load_feature_extractor  # heavy, and only needed here

    return Float64Features(load_feature_extractor(device))


def checked_sha256(path: Path, expected: Optional[str], what: str) -> str:
    """The sha256 of weights file `path`, refused when `expected` is given and differs:
    other weights give other features, and so a silently different FID."""
    actual = file_sha256(path)
    if expected is not None and actual != expected.strip().lower():
        raise ParameterError(f"{what} weights {path} have sha256 {actual}, not the "
                             f"expected {expected}: refusing another network's features")
    return actual


#: The logged name of the Inception preprocessing (the reference pipeline's, module doc).
INCEPTION_PREPROCESS = (f"{EDM_UINT8}, TF1 bilinear resize to 299 (no antialias), "
                        f"(x - 128) / 128")


class _InceptionInput(nn.Module):
    """Images in [-1, 1] -> the 8-bit RGB images that InceptionV3 takes (`edm_uint8`)."""

    preprocess = INCEPTION_PREPROCESS

    def __init__(self, inception: nn.Module, weights_sha256: Optional[str] = None):
        super().__init__()
        self.inception, self.weights_sha256 = inception, weights_sha256

    def forward(self, x: Tensor) -> Tensor:
        return self.inception(edm_uint8(x))


def inception_extractor(weights_path: PathLike, feature: int = 2048,
                        expected_sha256: Optional[str] = None) -> Float64Features:
    """InceptionV3 (torch-fidelity's FID network) from a local weights file; no download.

    Needs the `torch-fidelity` package (torchmetrics' image extra). `weights_sha256` is
    the weight file's sha256 (refused before loading when `expected_sha256` differs),
    `sha256` names it with the preprocessing (the feature space, by which reference
    statistics are cached).
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"InceptionV3 weights not found at {path}; this harness "
                                f"never downloads them: pass a local file")
    weights_sha256 = checked_sha256(path, expected_sha256, "InceptionV3")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        # antialias=False: the TF1 resize of the reference graph, not torchmetrics' default.
        inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                       feature_extractor_weights_path=str(path),
                                       antialias=False)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"InceptionV3 features need torch-fidelity "
                                  f"(pip install torch-fidelity): {err}") from None
    space = hashlib.sha256(f"inception\n{INCEPTION_PREPROCESS}\n{weights_sha256}".encode())
    return Float64Features(_InceptionInput(inception, weights_sha256),
                           sha256=space.hexdigest(), num_features=feature)


# --- reference statistics, cached on disk ------------------------------------------------

@dataclass(frozen=True)
class ReferenceStats:
    """Float64 moments of a set of features: a reference set's, or a trial's samples'.

    `features_sum` and `features_cov_sum` (sum of x and of x x^T) add up over batches and
    processes; `mean` and `cov` (unbiased) are the set's Gaussian, what FID compares.
    `features` (float64, N x F) is kept only when asked for (KID needs every feature).
    """

    data_id: str
    extractor_sha256: str
    n: int
    features_sum: Tensor
    features_cov_sum: Tensor
    features: Optional[Tensor] = None

    @property
    def mean(self) -> Tensor:
        return self.features_sum / self.n

    @property
    def cov(self) -> Tensor:
        mean = self.mean
        return (self.features_cov_sum - self.n * torch.outer(mean, mean)) / (self.n - 1)

    @classmethod
    def of_features(cls, features: Tensor, data_id: str = "samples",
                    extractor_sha256: str = "", keep_features: bool = False
                    ) -> ReferenceStats:
        """The moments of `features` (N, F), summed in float64."""
        x = features.detach().flatten(1).double()
        return cls(data_id, extractor_sha256, x.shape[0], x.sum(0), x.T @ x,
                   x if keep_features else None)

    def fid_against(self, reference: ReferenceStats) -> float:
        """FID of this set's Gaussian against `reference`'s (at least two of each), or
        against published moments of unrecorded size (`reference.n` None,
        `harness.metrics.reference_npz`)."""
        if self.n < 2 or (reference.n is not None and reference.n < 2):
            raise ValueError(f"FID needs at least two samples a side, got {self.n} "
                             f"against {reference.n}")
        return frechet_distance(reference.mean, reference.cov, self.mean, self.cov)


def cache_key(data_id: str, extractor_sha256: str) -> str:
    return hashlib.sha256(f"{data_id}\n{extractor_sha256}".encode()).hexdigest()


def cache_path(data_id: str, extractor_sha256: str, cache_dir: Optional[PathLike] = None
               ) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "fid" / f"{cache_key(data_id, extractor_sha256)[:32]}.pt"


@torch.no_grad()
def extract(extractor: nn.Module, images: Tensor, batch_size: int = 500,
            device: Union[str, torch.device, None] = None) -> Tensor:
    """Features (N, F) in float64 on the CPU, computed in batches on `device`."""
    device = device if device is not None else _module_device(extractor)
    parts = [extractor(images[i:i + batch_size].to(device)).double().cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def reference_stats(data_id: str, images: Callable[[], Tensor], extractor: nn.Module, *,
                    keep_features: bool = False, cache_dir: Optional[PathLike] = None,
                    use_cache: bool = True, batch_size: int = 500) -> ReferenceStats:
    """Reference statistics for (data_id, extractor.sha256), from the disk cache if there.

    `images()` is called only on a cache miss. `data_id` must change whenever the data
    do (e.g. it holds the split and a fingerprint). A cached file without features is
    recomputed when `keep_features` asks for them.
    """
    sha = str(extractor.sha256)
    path = cache_path(data_id, sha, cache_dir)
    stored = _read_cache(path) if use_cache else None
    if (stored is not None and stored["data_id"] == data_id
            and stored["extractor_sha256"] == sha
            and (stored.get("features") is not None or not keep_features)):
        return ReferenceStats(data_id, sha, int(stored["n"]), stored["features_sum"],
                              stored["features_cov_sum"], stored.get("features"))
    features = extract(extractor, images(), batch_size)
    if features.shape[0] < 2:
        raise ValueError("reference statistics need at least two reference samples")
    stats = ReferenceStats.of_features(features, data_id, sha, keep_features)
    if use_cache:
        _write_cache(path, {"data_id": data_id, "extractor_sha256": sha, "n": stats.n,
                            "mean": stats.mean, "cov": stats.cov,
                            "features_sum": stats.features_sum,
                            "features_cov_sum": stats.features_cov_sum,
                            "features": stats.features})
    return stats


#: What a usable cache file holds; anything else is recomputed.
CACHE_KEYS = ("data_id", "extractor_sha256", "n", "features_sum", "features_cov_sum")


def _read_cache(path: Path) -> Optional[dict[str, Any]]:
    """The cached statistics, or None when there are none or the file is unreadable (a
    damaged or foreign file is recomputed with a warning, never a crash)."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or any(k not in stored for k in CACHE_KEYS):
            raise ValueError("not a reference-statistics file")
    except Exception as err:  # UnpicklingError, RuntimeError (torn zip), EOFError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(f"FID reference cache {path} is unreadable ({type(err).__name__}: "
                      f"{first[:200]}); recomputing it", RuntimeWarning, stacklevel=3)
        return None
    return stored


def _write_cache(path: Path, content: dict[str, Any]) -> None:
    """Write the cache atomically (concurrent processes never read half a file); a
    cache that cannot be written costs time on the next run, not this run's result."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, tmp)
        tmp.replace(path)
    except OSError as err:
        warnings.warn(f"FID reference cache {path} not written ({err}); it will be "
                      f"recomputed next time", RuntimeWarning, stacklevel=3)
        with contextlib.suppress(OSError):
            tmp.unlink()


# --- FID ------------------------------------------------------------------------------------

def frechet_distances(mean_1: Tensor, cov_1: Tensor, mean_2: Tensor, cov_2: Tensor
                      ) -> Tensor:
    """|mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) in float64, for one pair of
    Gaussians or a batch of them (leading dimensions broadcast): FID's one formula.

    Tr (S_1 S_2)^(1/2) is the sum of the square roots of the eigenvalues of S_1 S_2, which
    are those of the symmetric S_2^(1/2) S_1 S_2^(1/2): real and >= 0 in exact
    arithmetic. Computed, they carry rounding (tiny negative or complex values); each
    gets its principal complex square root, whose real part is summed, as torchmetrics
    does. With fewer samples than features (a singular covariance) the zero eigenvalues
    come out at rounding level, ~1e-15 of the largest, and their square roots at ~3e-8:
    there the value is defined only to ~1e-7 relative (this formula, scipy's `sqrtm` and
    a symmetric eigendecomposition, which agree to 1e-11 otherwise, differ by 3e-8 to
    1e-7 on 40 digits in 64 features), so compare such FIDs at that precision.
    """
    mean_1, cov_1, mean_2, cov_2 = (t.double() for t in (mean_1, cov_1, mean_2, cov_2))
    trace_sqrt = torch.linalg.eigvals(cov_1 @ cov_2).sqrt().real.sum(-1)
    traces = cov_1.diagonal(0, -2, -1).sum(-1) + cov_2.diagonal(0, -2, -1).sum(-1)
    return (mean_1 - mean_2).square().sum(-1) + traces - 2 * trace_sqrt


def frechet_distance(mean_1: Tensor, cov_1: Tensor, mean_2: Tensor, cov_2: Tensor
                     ) -> float:
    """`frechet_distances` of one pair of Gaussians, as a float."""
    return float(frechet_distances(mean_1, cov_1, mean_2, cov_2))


class FID:
    """FID of sample sets against fixed reference statistics.

    `fid(samples)` returns (value, n): the samples' features summed into float64 moments
    and compared with the reference's (`ReferenceStats.fid_against`).
    """

    def __init__(self, extractor: nn.Module, reference: ReferenceStats,
                 batch_size: int = 500):
        if reference.extractor_sha256 != str(extractor.sha256):
            raise ValueError("reference statistics were computed with another extractor")
        self.extractor, self.reference, self.batch_size = extractor, reference, batch_size

    def __call__(self, samples: Tensor) -> tuple[float, int]:
        stats = ReferenceStats.of_features(extract(self.extractor, samples, self.batch_size))
        return stats.fid_against(self.reference), stats.n


# --- KID ------------------------------------------------------------------------------------

class KID:
    """KID (Binkowski et al. 2018) against reference features; `kid(samples)` ->
    (mean, std over subsets, n), `kid.of_features(features)` the same from features.
    Subsets are drawn from a generator seeded by `seed`, so the value is reproducible;
    `subset_size` is capped at the smaller set's size."""

    def __init__(self, extractor: nn.Module, reference: ReferenceStats,
                 subset_size: int = 1000, subsets: int = 100, seed: int = 0):
        if reference.features is None:
            raise ValueError("KID needs reference features: reference_stats(keep_features=True)")
        if reference.extractor_sha256 != str(extractor.sha256):
            raise ValueError("reference features were computed with another extractor")
        self.extractor, self.reference = extractor, reference
        self.subset_size, self.subsets, self.seed = subset_size, subsets, seed

    def __call__(self, samples: Tensor) -> tuple[float, float, int]:
        return self.of_features(extract(self.extractor, samples))

    @torch.no_grad()
    def of_features(self, features: Tensor) -> tuple[float, float, int]:
        from torchmetrics.image.kid import KernelInceptionDistance

        size = min(self.subset_size, features.shape[0], self.reference.n)
        with warnings.catch_warnings():  # its "stores all features" notice: we know
            warnings.simplefilter("ignore", UserWarning)
            # Not synced over processes: every process passes every feature already.
            metric = KernelInceptionDistance(feature=nn.Identity(), subsets=self.subsets,
                                             subset_size=size, sync_on_compute=False)
        metric.update(self.reference.features, real=True)
        metric.update(features, real=False)
        # torchmetrics draws its subsets from the global generator: fork and seed it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, std = metric.compute()
        return float(mean), float(std), int(features.shape[0])
