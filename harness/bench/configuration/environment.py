"""Where and with what the numbers were made: device, threads, versions, host.

Logged verbatim with every trial (MLflow params, `trials.jsonl`) so that a number can
always be traced to the machine and software that made it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Optional

import torch

from ...core import distributed, host_allocator
from ...core.model import ScoreModel
from ...models.precision import describe

DISTRIBUTION = "diffusion-sampler-harness"


def version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device, dtype: str, model: Optional[ScoreModel] = None
                ) -> dict[str, str]:
    """Where and with what the numbers were made (logged with every run)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"device": str(device), "device_name": name, "dtype": dtype,
            "cpu_count": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()), "host": platform.node(),
            "version.harness": version(DISTRIBUTION), "version.torch": torch.__version__,
            "version.python": platform.python_version(), "version.mlflow": version("mlflow"),
            "platform": platform.platform(), "world_size": str(distributed.world_size()),
            "host_allocator": host_allocator.describe(),
            **({"distributed_backend": torch.distributed.get_backend()}
               if distributed.is_distributed() else {}),
            **{k: str(v) for k, v in (describe(model) if model is not None else {}).items()}}


def _cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
