"""Built-in models: the shipped digits score networks (unconditional and class-conditional),
users' diffusers checkpoints (a UNet2DModel, or a latent model: DiT or UNet + VAE) and
k-diffusion image_v1 models."""

from __future__ import annotations

from harness import ModelSpec, hookimpl

harness_api_version = 1


def _load_digits(device="cpu", path=None):
    from harness.models.pretrained import load_digits_model

    return load_digits_model(device, path)


def _load_digits_cond(device="cpu", path=None):
    from harness.models.pretrained import load_conditional_digits_model

    return load_conditional_digits_model(device, path)


def _class_index(model, null_class):
    from harness.errors import ParameterError

    if null_class is None:
        return None
    if isinstance(null_class, bool) or not str(null_class).lstrip("-").isdigit():
        raise ParameterError(f"model {model!r}: null_class must be an integer class "
                             f"index, got {null_class!r}")
    return int(null_class)


def _load_diffusers(device="cpu", path=None, null_class=None):
    from harness.models.diffusers_model import load_diffusers_unet
    from harness.errors import ParameterError

    if path is None:
        raise ParameterError("model 'diffusers' needs option path=<local directory of a "
                             "saved UNet2DModel>")
    null_class = _class_index("diffusers", null_class)
    return load_diffusers_unet(path, device, null_class=null_class)


def _load_latent(device="cpu", path=None, null_class=None, sha256=None):
    from harness.models.latent_model import load_latent_model
    from harness.errors import ParameterError

    if path is None:
        raise ParameterError("model 'latent' needs option path=<local directory of a "
                             "saved pipeline: transformer/ or unet/, vae/, scheduler/>")
    return load_latent_model(path, device, null_class=_class_index("latent", null_class),
                             sha256=sha256)


def _load_kdiffusion(device="cpu", path=None, config=None, sha256=None):
    from harness.models.kdiffusion_model import load_kdiffusion_model
    from harness.errors import ParameterError

    if path is None:
        raise ParameterError("model 'kdiffusion' needs option path=<a k-diffusion "
                             "checkpoint (.pth) or .safetensors>")
    return load_kdiffusion_model(path, config, device, sha256=sha256)


@hookimpl
def harness_register_models(register):
    register(ModelSpec(
        "digits", _load_digits,
        "the shared pretrained score model: EDM U-Net on 8x8 digits (shipped, "
        "sha256-verified)",
        {"path": "a checkpoint (.safetensors with its .json manifest) of the same "
                 "architecture; default: the shipped weights"}))
    register(ModelSpec(
        "digits-cond", _load_digits_cond,
        "the class-conditional sibling of digits: the same EDM U-Net with a class "
        "embedding, trained with label dropout 0.1 (shipped, sha256-verified); its plain "
        "denoiser is the unconditional one",
        {"path": "a class-conditional checkpoint (.safetensors with its .json manifest) "
                 "of the same architecture; default: the shipped weights"},
        num_classes=10))
    register(ModelSpec(
        "diffusers", _load_diffusers,
        "a diffusers UNet2DModel (eps-prediction DDPM) from a local directory, "
        "class-conditional if it has class embeddings; needs pip install .[diffusers]",
        {"path": "local directory written by save_pretrained (no hub access)",
         "null_class": "for a UNet with num_class_embeds: the class index of the "
                       "unconditional (null) class; default: the last"},
        num_classes=None))
    register(ModelSpec(
        "latent", _load_latent,
        "a latent diffusion model from a local pipeline folder: a DiT (class-conditional) "
        "or UNet2DModel denoising latents, decoded by its AutoencoderKL before metrics "
        "and grids; safetensors only; needs pip install .[diffusers]",
        {"path": "local pipeline folder: transformer/ or unet/, vae/, optional scheduler/ "
                 "(docs/models.md)",
         "null_class": "the denoiser's class index of the unconditional class; default: "
                       "DiT's num_embeds_ada_norm, a UNet's last",
         "sha256": "pins 'FILE:HEX,FILE:HEX' (paths relative to path), each checked "
                   "before the file is read"},
        num_classes=None))
    register(ModelSpec(
        "kdiffusion", _load_kdiffusion,
        "a k-diffusion image_v1 model (its training config + weights), built by "
        "k-diffusion's own model code, EMA weights, Karras preconditioning on the EDM SDE; "
        "needs pip install --no-deps k-diffusion",
        {"path": "weights: k-diffusion's training checkpoint (.pth, read with "
                 "weights_only) or .safetensors",
         "config": "the training config JSON; default: the one the weights embed",
         "sha256": "the weights file's sha256, checked before it is read"}))
