"""Built-in models: the exact Gaussian-mixture oracles under any SDE, unconditional and
class-conditional (class = mixture component; guidance has a closed-form target)."""

from __future__ import annotations

from harness import ModelSpec, hookimpl
from harness.models.oracle import conditional_64d, mixture_64d, overlapping_2d, ring_2d
from harness.core.sde import make_sde

harness_api_version = 1

_OPTIONS = {"sde": "forward process: vp (default), subvp, ve or edm"}


def _loader(preset):
    def load(device="cpu", sde: str = "vp"):
        return preset(make_sde(sde)).to(device)
    return load


@hookimpl
def harness_register_models(register):
    register(ModelSpec("gmm-ring-2d", _loader(ring_2d),
                       "exact oracle: 8 Gaussians on a ring of radius 1 (std 0.1), 2-D",
                       dict(_OPTIONS)))
    register(ModelSpec("gmm-64d", _loader(mixture_64d),
                       "exact oracle: fixed 8-component diagonal Gaussian mixture, 64-D",
                       dict(_OPTIONS)))
    register(ModelSpec("gmm-cond-2d", _loader(overlapping_2d),
                       "exact conditional oracle: 3 overlapping Gaussians (classes) on a "
                       "circle of radius 0.5 (std 0.35), 2-D", dict(_OPTIONS), num_classes=3))
    register(ModelSpec("gmm-cond-64d", _loader(conditional_64d),
                       "exact conditional oracle: gmm-64d with its 8 components as classes, "
                       "64-D", dict(_OPTIONS), num_classes=8))
