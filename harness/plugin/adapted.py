"""Adapted samplers: another library's code registered as `library:name`.

An adapter plugin (the built-in `diffusers_schedulers`, `kdiffusion_samplers`) names its
samplers `<library>:<name>` and may state, as module attributes, the distribution it
runs (`DISTRIBUTION`: its version is part of every trial's configuration hash and of
the listings) and what that library ships that it could not run (`NOT_ADAPTED`: name ->
why), which listings show and which answers a suite asking for one of them.
"""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Any, Optional


def library_of(name: str) -> Optional[str]:
    """The library an adapted sampler (`diffusers:DDIMScheduler`) runs, else None."""
    return name.split(":", 1)[0] if ":" in name else None


def adapter_module(loaded: Any, library: str) -> Any:
    """The module that registered the samplers of `library`, or None."""
    for name, entry in loaded.samplers.entries():
        if library_of(name) == library:
            return sys.modules.get(entry.origin.module)
    return None


def adapted_libraries(loaded: Any) -> dict[str, dict[str, Any]]:
    """Per library prefix of the adapted samplers: its distribution and version, and
    what it ships that its adapter could not run, with why."""
    out: dict[str, dict[str, Any]] = {}
    for name in loaded.samplers.names():
        library = library_of(name)
        if not library or library in out:
            continue
        module = adapter_module(loaded, library)
        distribution = getattr(module, "DISTRIBUTION", None)
        out[library] = {"distribution": distribution, "version": installed(distribution),
                        "not_adapted": dict(sorted(getattr(module, "NOT_ADAPTED",
                                                           {}).items()))}
    return out


def installed(distribution: Optional[str]) -> Optional[str]:
    """The installed version of a distribution, None when it is not installed."""
    if not distribution:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def why_not_adapted(loaded: Any, name: str) -> Optional[str]:
    """Why `library:name` is no sampler, when its library's adapter says so."""
    library = library_of(name)
    if library is None:
        return None
    reasons = getattr(adapter_module(loaded, library), "NOT_ADAPTED", {})
    what = name.split(":", 1)[1]
    return f"{library}'s {what} is not adapted: {reasons[what]}" if what in reasons else None
