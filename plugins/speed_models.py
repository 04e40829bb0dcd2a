"""Built-in benchmark-only model: a CIFAR-10-sized U-Net with untrained weights, to time
samplers on a network of the size the field benchmarks (`harness.models.speed_unet`)."""

from __future__ import annotations

from harness import ModelSpec, hookimpl

harness_api_version = 1


def _load_untrained_unet_32(device="cpu"):
    from harness.models.speed_unet import untrained_unet_32

    return untrained_unet_32(device)


@hookimpl
def harness_register_models(register):
    register(ModelSpec(
        "untrained-unet-32", _load_untrained_unet_32,
        "UNTRAINED, for speed only: a 3x32x32 EDM U-Net of DDPM++'s CIFAR-10 size "
        "(56 M parameters) with random weights from a fixed seed; metrics of quality or "
        "likelihood are refused on it",
        trained=False))
