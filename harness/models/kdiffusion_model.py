"""A k-diffusion `image_v1` model (a config JSON and its weights) as a ScoreModel.

k-diffusion (Crowson) trains its networks in the preconditioning of Karras et al. (2022,
Table 1, "ours"): with sigma_data from the config,

    c_in = 1 / sqrt(sigma^2 + sigma_data^2),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    D(x; sigma) = c_skip x + c_out F(c_in x, sigma),

where F is the network, which embeds c_noise = ln(sigma) / 4 itself. The forward process
is EDM's (s = 1, sigma(t) = t: `EDMSDE`, with the config's sigma_min and sigma_max).

The network is built by k-diffusion's own code: its `layers.py` and `models/image_v1.py`,
loaded from the installed package under a private name (the package's `__init__` and
`utils` import its training stack: torchvision, kornia, scikit-image, wandb; `layers.py`
imports `dctorch` for a multi-scale training loss). Those two files are given the one
helper of `utils` they use at inference (`append_dims`); `sampling` and, when it is not
installed, `dctorch` are empty stand-ins, used only by training losses, which never run
here. Only `image_v1` is supported: `image_transformer_v1` needs natten or flash
attention kernels, and is refused by name.

The config is k-diffusion's training config (its "model" table; defaults for the keys
it may omit are k-diffusion's, `IMAGE_V1_DEFAULTS`). With `augment_wrapper` (the
default), k-diffusion wraps the network in `KarrasAugmentWrapper`, which feeds 9 extra
mapping inputs describing the data augmentation of each training image; at sampling time
they are zeros (no augmentation), which is what this model passes. Conditioning inputs
(`mapping_cond_dim`, `unet_cond_dim`, `cross_cond_dim` > 0) have no source here and are
refused.

Weights: a training checkpoint written by k-diffusion's `train.py` (`torch.save` of a
dict with `model_ema`, `model` and `config`), read with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, never code; or a `.safetensors`
state dict (as k-diffusion's `convert_for_inference.py` writes, its config in the file's
metadata). The EMA weights are used when present. A sha256 pin is checked before the
file is read.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from ..core.model import DataSpec, ScoreModel
from ..core.sde import EDMSDE, _expand
from ..errors import ParameterError
from .checkpoint import CheckpointError
from .pinned_files import check_pins, require_file

#: k-diffusion's defaults for the "model" keys an image_v1 config may omit
#: (`k_diffusion.config.load_config`).
IMAGE_V1_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "augment_wrapper": True, "mapping_cond_dim": 0, "unet_cond_dim": 0,
    "cross_cond_dim": 0, "cross_attn_depths": None, "skip_stages": 0,
    "has_variance": False, "sigma_data": 1.0, "dropout_rate": 0.0,
}
#: The mapping inputs `KarrasAugmentWrapper` adds: the augmentation's 9 parameters.
AUGMENT_FEATURES = 9
#: Where k-diffusion's model files land (never `k_diffusion`, which may import later).
PRIVATE = "_kdiffusion_models_alone"


class KDiffusionModel(ScoreModel):
    """k-diffusion's `image_v1` network with Karras et al.'s preconditioning (module
    docstring), on the EDM SDE."""

    def __init__(self, network: nn.Module, model_config: Mapping[str, Any]):
        config = {**IMAGE_V1_DEFAULTS, **model_config}
        size = config["input_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        sde = EDMSDE(float(config.get("sigma_min", 0.002)),
                     float(config.get("sigma_max", 80.0)))
        super().__init__(sde, DataSpec((int(config["input_channels"]), *size),
                                       (-1.0, 1.0), levels=256))
        self.network = network
        self.sigma_data = float(config["sigma_data"])
        self.augment_features = AUGMENT_FEATURES if config["augment_wrapper"] else 0

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        sd2 = self.sigma_data**2
        total = _expand(sigma**2 + sd2, x)
        c_skip, c_in = sd2 / total, total.rsqrt()
        c_out = _expand(sigma, x) * self.sigma_data * c_in
        net_dtype = next(self.network.parameters()).dtype
        mapping = None
        if self.augment_features:  # no augmentation at sampling time: zeros
            mapping = x.new_zeros((x.shape[0], self.augment_features), dtype=net_dtype)
        out = self.network((c_in * x).to(net_dtype), sigma.to(net_dtype),
                           mapping_cond=mapping)
        return c_skip * x + c_out * out.to(x.dtype)


def image_v1_module() -> types.ModuleType:
    """k-diffusion's `models/image_v1.py`, loaded with its `layers.py` alone (module
    docstring); once per process."""
    loaded = sys.modules.get(f"{PRIVATE}.models.image_v1")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ParameterError("k-diffusion models need the package k-diffusion "
                             "(`pip install --no-deps k-diffusion` suffices)")
    root = Path(next(iter(spec.submodule_search_locations)))

    def package(name: str, path: Path) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        return module

    utils = types.ModuleType(f"{PRIVATE}.utils")
    utils.append_dims = _append_dims
    stand_ins = {PRIVATE: package(PRIVATE, root),
                 f"{PRIVATE}.models": package(f"{PRIVATE}.models", root / "models"),
                 utils.__name__: utils,
                 f"{PRIVATE}.sampling": types.ModuleType(f"{PRIVATE}.sampling")}
    stand_ins[PRIVATE].utils = utils
    stand_ins[PRIVATE].sampling = stand_ins[f"{PRIVATE}.sampling"]
    lent = {}
    if importlib.util.find_spec("dctorch") is None:
        lent["dctorch"] = types.ModuleType("dctorch")
        lent["dctorch"].functional = types.ModuleType("dctorch.functional")
    sys.modules.update(stand_ins)
    sys.modules.update(lent)
    try:
        layers = _exec(f"{PRIVATE}.layers", root / "layers.py")
        stand_ins[PRIVATE].layers = layers
        return _exec(f"{PRIVATE}.models.image_v1", root / "models" / "image_v1.py")
    except BaseException:
        for name in stand_ins:
            sys.modules.pop(name, None)
        raise
    finally:
        for name in lent:  # the training-only stand-in must not shadow a later install
            sys.modules.pop(name, None)


def _exec(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _append_dims(x: Tensor, ndim: int) -> Tensor:
    """x with trailing axes of size 1 up to `ndim` axes (k-diffusion's `append_dims`)."""
    return x[(...,) + (None,) * (ndim - x.ndim)]


def build_image_v1(model_config: Mapping[str, Any]) -> nn.Module:
    """The `ImageDenoiserModelV1` of a config's "model" table, as `make_model` builds it
    (without `KarrasAugmentWrapper`, whose zero inputs `KDiffusionModel` passes)."""
    config = {**IMAGE_V1_DEFAULTS, **model_config}
    kind = config.get("type")
    if kind != "image_v1":
        raise ParameterError(f"k-diffusion model type {kind!r} is not supported: only "
                             f"'image_v1' (image_transformer_v1 needs natten or flash "
                             f"attention kernels)")
    conditioned = [key for key in ("mapping_cond_dim", "unet_cond_dim", "cross_cond_dim")
                   if config[key]]
    if conditioned:
        raise ParameterError(f"k-diffusion model with {', '.join(conditioned)} > 0: its "
                             f"conditioning inputs have no source here")
    augment = AUGMENT_FEATURES if config["augment_wrapper"] else 0
    return image_v1_module().ImageDenoiserModelV1(
        config["input_channels"], config["mapping_out"], config["depths"],
        config["channels"], config["self_attn_depths"], config["cross_attn_depths"],
        patch_size=config["patch_size"], dropout_rate=config["dropout_rate"],
        mapping_cond_dim=augment, skip_stages=config["skip_stages"],
        has_variance=config["has_variance"])


def _read_weights(path: Path, ema: bool) -> tuple[dict[str, Tensor], Optional[dict]]:
    """(state dict, embedded config or None) of a training checkpoint or safetensors."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        config = json.loads(metadata["config"]) if "config" in metadata else None
        return load_file(str(path)), config
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError: something other than tensors and data
        raise CheckpointError(f"{path} is not a checkpoint of tensors and plain data "
                              f"(weights_only loading refused it: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} holds a {type(saved).__name__}, not a dict")
    keys = ("model_ema", "model") if ema else ("model",)
    for key in keys:
        if isinstance(saved.get(key), dict):
            return saved[key], saved.get("config")
    if all(isinstance(v, Tensor) for v in saved.values()):
        return saved, None  # a bare state dict
    raise CheckpointError(f"{path} has none of {', '.join(keys)} (keys: "
                          f"{', '.join(map(str, saved))})")


def load_kdiffusion_model(path: Union[str, Path], config: Union[None, str, Path] = None,
                          device: Union[str, torch.device] = "cpu",
                          dtype: torch.dtype = torch.float32,
                          sha256: Optional[str] = None,
                          ema: bool = True) -> KDiffusionModel:
    """A `KDiffusionModel` from k-diffusion weights `path` (`.pth` training checkpoint or
    `.safetensors`) and its config JSON (`config`; default: the one the weights embed).

    `sha256` pins the weights file, checked before it is read. `ema`: the EMA weights
    (`model_ema`) when the checkpoint has them, else `model`.
    """
    path = Path(path)
    require_file(path.parent, path.name, "k-diffusion weights")
    if sha256 is not None:
        check_pins(path.parent, {path.name: sha256.strip().lower()})
    state, embedded = _read_weights(path, ema)
    if config is not None:
        config_path = Path(config)
        require_file(config_path.parent, config_path.name, "k-diffusion config")
        embedded = json.loads(config_path.read_text(encoding="utf-8"))
    if not isinstance(embedded, dict) or "model" not in embedded:
        raise CheckpointError(f"no k-diffusion config with a 'model' table for {path}: "
                              f"give config=<the training config JSON>")
    network = build_image_v1(embedded["model"])
    prefix = "inner_model."  # the augmentation wrapper's name for the network
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit its config's image_v1 network: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    network = network.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return KDiffusionModel(network, embedded["model"]).eval()
