"""Reference PF-ODE solutions kept on disk, so that a tight solve is paid once per machine.

`ode_error`'s references (a dopri5 solve at rtol = atol = 1e-7 in float64 per sample)
cost 20-35x the sampling time of a 10-NFE trial on the digits model: without a disk
store every run pays them again, and a short "try it" run spends nearly all its time
there. A reference depends only on what `ReferenceKey` names: the model (its class, its
SDE, its data and every parameter and buffer), the sample's initial noise (seed, index,
the state's dtype), the solver and tolerances, the guidance scale and the sample's label,
and the code that computes it (this package's version, torch's, the device type: float
rounding differs between them at the level of the tolerance). Anything else reuses it.

One file per `ReferenceStore` (model, solver settings, seed, guidance) under
`<cache>/ode_error/`, holding
every sample solved so far; written atomically after the solve, so a process killed
mid-write or a full disk leaves the previous file or none, never half of one. A file that
cannot be read is solved again (with a warning), never trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.model import ScoreModel
from .fid import default_cache_dir

#: What every readable store file holds.
STORE_KEYS = ("key", "x", "nfe", "end")


def model_fingerprint(model: ScoreModel) -> str:
    """sha256 of what a model's PF-ODE depends on: its class, SDE, data and tensors."""
    digest = hashlib.sha256()
    cls = type(model)
    digest.update(f"{cls.__module__}.{cls.__qualname__}\n{model.sde!r}\n"
                  f"{model.data!r}\n{_distribution_version(cls.__module__)}\n".encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _distribution_version(module: str) -> str:
    """The version of the distribution that provides `module` (its code may change the
    flow with the same weights), or "" when it is not an installed distribution."""
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    versions = []
    for name in sorted(set(names)):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name}=={importlib.metadata.version(name)}")
    return ",".join(sorted(versions))


@dataclass(frozen=True)
class ReferenceStore:
    """The stored solutions of one (model, solver settings, seed, guidance): the fields
    are everything a reference depends on beyond the sample itself; `cache_dir` (None:
    `default_cache_dir()`) only says where the file lives."""

    model: str              # model_fingerprint(model)
    seed: int
    state_dtype: str        # the dtype x_T was drawn in (the suite's)
    solve_dtype: str        # the dtype of the solve
    solver: str
    rtol: float
    atol: float
    guidance: Optional[float]
    device_type: str
    cache_dir: Optional[str] = field(default=None, compare=False)

    fingerprint = staticmethod(model_fingerprint)

    def key(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "cache_dir"}
        return (f"{fields!r}\n{_distribution_version(__name__)}\n"
                f"torch=={torch.__version__}")

    @property
    def path(self) -> Path:
        folder = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        name = hashlib.sha256(self.key().encode()).hexdigest()[:32]
        return folder / "ode_error" / f"{name}.pt"

    def load(self) -> dict[str, Any]:
        """The solutions stored ({"x": {sample: tensor}, "nfe": {sample: float}, "end":
        str}), or an empty store when there is none or it cannot be trusted."""
        empty: dict[str, Any] = {"x": {}, "nfe": {}, "end": ""}
        path = self.path
        if not path.is_file():
            return empty
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(stored, dict) or any(k not in stored for k in STORE_KEYS):
                raise ValueError("not a reference-solution file")
        except Exception as err:  # UnpicklingError, a torn zip, EOFError...
            first = (str(err).strip().splitlines() or [""])[0]
            warnings.warn(f"ode_error reference store {path} is unreadable "
                          f"({type(err).__name__}: {first[:200]}); solving again",
                          RuntimeWarning, stacklevel=2)
            return empty
        if stored["key"] != self.key():  # a hash collision, or a file put there by hand
            return empty
        return {"x": dict(stored["x"]), "nfe": dict(stored["nfe"]), "end": stored["end"]}

    def save(self, store: dict[str, Any]) -> None:
        """Write `store` atomically; one that cannot be written costs the next run time,
        never this run's values (a warning says why)."""
        path = self.path
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": self.key(), "x": store["x"], "nfe": store["nfe"],
                        "end": store["end"]}, tmp)
            tmp.replace(path)
        except OSError as err:
            warnings.warn(f"ode_error reference store {path} not written ({err}); the "
                          f"references will be solved again next time", RuntimeWarning,
                          stacklevel=2)
            with contextlib.suppress(OSError):
                tmp.unlink()
