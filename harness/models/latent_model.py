"""Latent diffusion models: a denoiser of latents and the VAE decoder that makes images.

A latent model (DiT, Peebles & Xie 2023; LDM, Rombach et al. 2022) diffuses the latents
z = scaling_factor * E(image) of an autoencoder, not the images. Here

* the sampler's state is the latent: the model's `data` is the latent's shape (continuous,
  unbounded), its SDE the denoiser's discrete DDPM schedule (`DiscreteVPSDE`), and its
  denoiser the diffusers network read exactly as `DiffusersUNetModel` reads a UNet
  (x_t = s x, timestep by ln(sigma), eps / v / x_0 by the scheduler's `prediction_type`);
* `decode(z)` is AutoencoderKL's decoder applied to z / scaling_factor (+ shift_factor
  when the VAE's config has one), clamped to [-1, 1] as the diffusers pipelines clamp
  before saving, and `output_spec` describes those images (the VAE's out_channels, the
  latent's size times 2^(number of VAE blocks - 1), 256 levels in [-1, 1]).

The runner decodes a trial's samples after sampling (`ScoreModel.decode`): metrics and
sample grids see images; the decoder's time is logged as `decode_s`, no part of the
sampler's wall-clock, and its calls no part of the NFE.

Denoisers:

* `transformer/`: a `DiTTransformer2DModel`, class-conditional. DiT embeds K classes
  (`num_embeds_ada_norm`) and one more index, K, the null class of its label dropout:
  that is the default `null_class`. DiT learns its variance: its output has 2C channels,
  the eps prediction first, then the variance interpolation, which a sampler of the mean
  does not use; the eps half is read.
* `unet/`: a `UNet2DModel` in latent space, class-conditional when it has class
  embeddings (`num_class_embeds`, null class the last by default). Text-conditioned
  UNets (`UNet2DConditionModel`, Stable Diffusion) are refused.

Loading never unpickles: a folder as a diffusers pipeline saves it (`transformer/` or
`unet/`, `vae/`, optionally `scheduler/`), whose network folders must hold safetensors
weights; pickled weights (`.bin`, `.pt`, `.ckpt`) are refused with how to convert them.
The decoder is held outside the module tree, so that the denoiser is the model's one
network (`harness.models.precision`: `network_dtype` and compilation apply to it); the
decoder runs in the dtype and on the device it was loaded in. The model's identity
(`sha256`) names every weight file it read (`harness.models.pinned_files`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..core.model import DataSpec
from ..errors import ParameterError
from .checkpoint import CheckpointError
from .diffusers_model import DEFAULT_SCHEDULE, DiffusersUNetModel, _import_diffusers
from .pinned_files import Pins, check_pins, files_sha256, listing, parse_pins, require_file

#: The denoiser folders a pipeline may have, and the one class each may hold.
DENOISERS = {"transformer": "DiTTransformer2DModel", "unet": "UNet2DModel"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class LatentDiffusionModel(DiffusersUNetModel):
    """A diffusers denoiser of latents with its AutoencoderKL decoder (module docstring)."""

    decodes = True

    def __init__(self, network: nn.Module, vae: nn.Module, alphas_cumprod: Tensor,
                 prediction_type: str = "epsilon", null_class: Optional[int] = None,
                 num_class_embeds: Optional[int] = None, sha256: str = ""):
        config = network.config
        size = config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        latent = DataSpec((int(config.in_channels), *size), (-math.inf, math.inf))
        super().__init__(network, alphas_cumprod, prediction_type, data=latent,
                         null_class=null_class, num_class_embeds=num_class_embeds)
        self.__dict__["vae"] = vae  # not a child module: see the module docstring
        vae_config = vae.config
        self.scaling_factor = float(vae_config.scaling_factor)
        self.shift_factor = float(getattr(vae_config, "shift_factor", None) or 0.0)
        factor = 2 ** (len(vae_config.block_out_channels) - 1)
        self._output_spec = DataSpec(
            (int(vae_config.out_channels), size[0] * factor, size[1] * factor),
            (-1.0, 1.0), levels=256)
        if sha256:
            self.sha256 = sha256

    @property
    def output_spec(self) -> DataSpec:
        return self._output_spec

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images in [-1, 1] of `output_spec` for latents of `data` (module docstring)."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents / self.scaling_factor + self.shift_factor
        images = self.vae.decode(z.to(vae_dtype)).sample
        return images.clamp(-1.0, 1.0).to(latents.dtype)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one network's folder; pickles and absence refused."""
    require_file(folder, "config.json", f"{folder.name} config")
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        return weights
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{folder} holds pickled weights ({', '.join(pickles)}) and no .safetensors: "
            f"unpickling can run code, so they are not loaded. Convert them once, where "
            f"you trust the file: `Model.from_pretrained(folder, use_safetensors=False)"
            f".save_pretrained(folder, safe_serialization=True)` with the diffusers class "
            f"named in {folder / 'config.json'}")
    raise CheckpointError(f"{folder} holds no .safetensors weights ({listing(folder)})")


def _denoiser_folder(root: Path) -> Path:
    found = [root / name for name in DENOISERS if (root / name).is_dir()]
    if len(found) != 1:
        folders = " or ".join(f"{name}/" for name in DENOISERS)
        raise CheckpointError(f"a latent model folder needs exactly one of {folders} "
                              f"({listing(root)})")
    return found[0]


def load_latent_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                      dtype: torch.dtype = torch.float32, null_class: Optional[int] = None,
                      sha256: Pins = None) -> LatentDiffusionModel:
    """A `LatentDiffusionModel` from a local pipeline folder (never the hub).

    `sha256` pins files (relative to `path`) to their hashes, checked before any file is
    read (`harness.models.pinned_files`). The schedule is `scheduler/`'s config read by
    `DDPMScheduler` (its betas and `prediction_type`), else `DEFAULT_SCHEDULE`.
    """
    diffusers = _import_diffusers()
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"latent model folder not found: {root}")
    pins = parse_pins(sha256)
    check_pins(root, pins)
    denoiser_dir, vae_dir = _denoiser_folder(root), root / "vae"
    if not vae_dir.is_dir():
        raise CheckpointError(f"a latent model folder needs vae/ ({listing(root)})")
    weights = _weight_files(denoiser_dir) + _weight_files(vae_dir)
    identity = files_sha256(root, weights, pins)

    expected = DENOISERS[denoiser_dir.name]
    cls = getattr(diffusers, expected)
    declared = cls.load_config(str(denoiser_dir), local_files_only=True).get("_class_name")
    if declared not in (None, expected):
        raise ParameterError(f"{denoiser_dir} holds a {declared}; a latent model's "
                             f"{denoiser_dir.name}/ must hold a {expected}")
    network = cls.from_pretrained(str(denoiser_dir), use_safetensors=True,
                                  local_files_only=True, torch_dtype=dtype)
    vae = diffusers.AutoencoderKL.from_pretrained(str(vae_dir), use_safetensors=True,
                                                  local_files_only=True, torch_dtype=dtype)
    if (root / "scheduler" / "scheduler_config.json").is_file():
        scheduler = diffusers.DDPMScheduler.from_pretrained(
            str(root / "scheduler"), local_files_only=True)
    else:
        scheduler = diffusers.DDPMScheduler(**DEFAULT_SCHEDULE)
    for module in (network, vae):
        module.to(device).eval().requires_grad_(False)
    # DiT embeds num_embeds_ada_norm classes and the null class after them.
    embeds = network.config.num_embeds_ada_norm + 1 if expected.startswith("DiT") else None
    return LatentDiffusionModel(network, vae, scheduler.alphas_cumprod,
                                scheduler.config.prediction_type, null_class=null_class,
                                num_class_embeds=embeds, sha256=identity).eval()
