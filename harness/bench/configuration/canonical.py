"""A configuration's canonical forms: its hash, its flat keys, and the model's identity.

A trial's configuration hash is the sha256 of the canonical JSON of everything that
determines its result (`--resume` matches on it); what only changes how fast a result
comes (batch size, device, threads) stays out of it. The flat form (`samplers.heun.nfe`)
is how MLflow logs a configuration as params and how `--dry-run` prints it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from .suite_schema import Suite


def canonical_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_hash(model: Any) -> str:
    """The model's weight identity: its verified file hash, else a hash of its tensors."""
    known = getattr(model, "sha256", None)
    if isinstance(known, str) and known:
        return known
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_identity(suite: Suite, model: Any) -> dict[str, Any]:
    """What exactly the model is: name, options, weights and forward process."""
    return {"name": suite.model, "options": dict(suite.model_options),
            "weights_sha256": weights_hash(model), "sde": model.sde.params()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys (`samplers.heun.nfe`); empty tables stay as leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
