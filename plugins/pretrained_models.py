"""Built-in models: the shipped digits score networks (unconditional and class-conditional),
and users' diffusers checkpoints."""

from __future__ import annotations

from harness import ModelSpec, hookimpl

harness_api_version = 1


def _load_digits(device="cpu", path=None):
    from harness.models.pretrained import load_digits_model

    return load_digits_model(device, path)


def _load_digits_cond(device="cpu", path=None):
    from harness.models.pretrained import load_conditional_digits_model

    return load_conditional_digits_model(device, path)


def _load_diffusers(device="cpu", path=None, null_class=None):
    from harness.models.diffusers_model import load_diffusers_unet
    from harness.errors import ParameterError

    if path is None:
        raise ParameterError("model 'diffusers' needs option path=<local directory of a "
                             "saved UNet2DModel>")
    if null_class is not None:
        if isinstance(null_class, bool) or not str(null_class).lstrip("-").isdigit():
            raise ParameterError(f"model 'diffusers': null_class must be an integer class "
                                 f"index, got {null_class!r}")
        null_class = int(null_class)
    return load_diffusers_unet(path, device, null_class=null_class)


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
