"""The network's precision and compilation, chosen per run; the sampler's state is untouched.

`configure_model(model, dtype="bf16", compile=True)` replaces the model's network (its one
child module: `network` of a `NetworkScoreModel`, `unet` of the diffusers adapter) by

    torch.compile(NetworkPrecision(network, torch.bfloat16))

and returns the same model. NFE is still counted where it always is, at the `ScoreModel`
boundary (`score`, `denoise`, `ode_drift`): only what happens inside one evaluation
changes, never how many there are.

Why autocast rather than casting the weights to bf16: autocast runs matrix products and
convolutions in the low precision but keeps the numerically delicate operations
(normalisation, softmax, reductions) in float32 on CUDA, and the weights stay float32.
Floating inputs are cast to float32 on the way in (autocast never touches float64, so a
float64 sampler state would otherwise run the whole network in float64) and the outputs
are cast back to the dtype of the first floating input, i.e. the sampler's state: the
sampler integrates in float32 or float64 whatever the network computes in.

The wrapped network keeps its weights in float32 even when the model is later moved with
`model.to(torch.float64)` (as a float64 suite does): a configured network has one precision,
the one chosen here. Hence `model.dtype` of a configured model is float32, and callers
that want a float64 state pass `dtype=torch.float64` (the runner always does).

`dtype="fp32"` is the same wrapper without autocast: a float32 network under a float64
state. `dtype=None` leaves the network's precision as it is. On CUDA, whether float32
matrix products use TF32 is torch's global setting (`torch.backends.cuda.matmul.
allow_tf32`); `describe` reports it so timings state it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..errors import ParameterError
from ..core.model import ScoreModel

#: The sampler's state (`dtype`): what the loop integrates in, whatever the network uses.
STATE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
#: The network's own precision (`network_dtype`, besides "native": as loaded, in `dtype`).
NETWORK_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}


def _cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """`value` with every floating tensor in it (also inside tuples, lists and dicts, e.g.
    a diffusers output, which is a dict) cast to `dtype`; everything else as it is."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floating(v, dtype) for v in value)
    if isinstance(value, MutableMapping):  # in place: keeps the mapping's own class
        for key in list(value.keys()):
            value[key] = _cast_floating(value[key], dtype)
    return value


def _state_dtype(args: tuple, kwargs: dict) -> Optional[torch.dtype]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.dtype
    return None


class NetworkPrecision(nn.Module):
    """`network` with float32 weights, run under autocast to `dtype` (none for float32).

    Floating inputs go in as float32; floating outputs come back in the dtype of the first
    floating input (the sampler's state).
    """

    def __init__(self, network: nn.Module, dtype: torch.dtype):
        super().__init__()
        if dtype not in NETWORK_DTYPES.values():
            raise ParameterError(f"network dtype must be one of float32, bfloat16, float16; "
                                 f"got {dtype}")
        self.network = network.float()
        self.compute_dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        state = _state_dtype(args, kwargs)
        args, kwargs = _cast_floating(args, torch.float32), _cast_floating(kwargs, torch.float32)
        device = _device_type(args, kwargs)
        with torch.autocast(device, dtype=self.compute_dtype,
                            enabled=self.compute_dtype != torch.float32):
            out = self.network(*args, **kwargs)
        return out if state is None else _cast_floating(out, state)

    def _apply(self, fn: Any, recurse: bool = True) -> "NetworkPrecision":
        # `model.to(dtype)` must not undo the precision chosen here: device moves pass
        # through, dtype changes of floating weights are turned back into float32.
        def keep_float32(tensor: Tensor) -> Tensor:
            out = fn(tensor)
            return out.float() if out.is_floating_point() else out

        return super()._apply(keep_float32, recurse)

    def extra_repr(self) -> str:
        return f"compute_dtype={self.compute_dtype}"


def _device_type(args: tuple, kwargs: dict) -> str:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value.device.type
    return "cpu"


def network_attribute(model: ScoreModel) -> Optional[str]:
    """The name of the model's network: its only child module (None if it has not one)."""
    children = [name for name, _ in model.named_children()]
    return children[0] if len(children) == 1 else None


def _unwrap(module: nn.Module) -> nn.Module:
    """The network as it was before any `configure_model`."""
    module = getattr(module, "_orig_mod", module)  # torch.compile's OptimizedModule
    return module.network if isinstance(module, NetworkPrecision) else module


def configure_model(model: ScoreModel, dtype: Optional[str] = None, compile: bool = False,
                    compile_options: Optional[Mapping[str, Any]] = None) -> ScoreModel:
    """Run `model`'s network in `dtype` ("fp32", "bf16", "fp16"; None: as it is) and,
    with `compile`, through `torch.compile(**compile_options)`. Changes `model` in place
    and returns it; configuring again replaces the earlier choice.

    Models without a network (one child module), e.g. the exact Gaussian mixtures, can
    only be left as they are: asking for a dtype or compilation is an error.
    """
    if dtype is not None and dtype not in NETWORK_DTYPES:
        raise ParameterError(f"network dtype must be one of {', '.join(NETWORK_DTYPES)}, "
                             f"got {dtype!r}")
    name = network_attribute(model)
    if name is None:
        if dtype is None and not compile:
            return model
        raise ParameterError(f"{type(model).__name__} has no network module to run in "
                             f"another precision or to compile")
    network = _unwrap(getattr(model, name))
    if dtype is not None:
        network = NetworkPrecision(network, NETWORK_DTYPES[dtype])
    if compile:
        network = torch.compile(network, **dict(compile_options or {}))
    setattr(model, name, network)
    return model


def describe(model: ScoreModel) -> dict[str, Any]:
    """How the network runs, flat, for logging: dtype, autocast, compiled, TF32."""
    name = network_attribute(model)
    module = getattr(model, name) if name is not None else None
    compiled = module is not None and hasattr(module, "_orig_mod")
    inner = getattr(module, "_orig_mod", module)
    if isinstance(inner, NetworkPrecision):
        dtype = {v: k for k, v in NETWORK_DTYPES.items()}[inner.compute_dtype]
    else:
        dtype = "native"
    return {"network_dtype": dtype, "network_autocast": dtype in ("bf16", "fp16"),
            "network_compiled": compiled,
            "cuda_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
