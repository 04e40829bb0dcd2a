"""The model every benchmark times: the shipped digits EDM U-Net, or its architecture."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.core.model import ScoreModel


def digits_model(device: torch.device) -> tuple[ScoreModel, str]:
    """The shipped model; without its weights file, the same architecture with random
    weights (what an evaluation costs does not depend on the weights)."""
    from harness.models import pretrained

    weights = Path(pretrained.__file__).parent / "weights" / pretrained.SCORE_MODEL_FILE
    if weights.is_file():
        return pretrained.load_digits_model(device), "shipped digits_edm"
    from harness.models.digits import DIGITS_SPEC
    from harness.core.model import NetworkScoreModel
    from harness.core.sde import EDMSDE
    from harness.models.unet import EDMPrecond, UNetConfig

    network = EDMPrecond(UNetConfig()).to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    model = NetworkScoreModel(network, EDMSDE(), DIGITS_SPEC, parametrization="x0",
                              condition=pretrained._sigma_condition)
    return model.eval(), "EDMPrecond(UNetConfig()), random weights (shipped file absent)"
