"""Which code makes a trial's result: the harness's version and each plugin's.

Part of every trial's configuration hash (`harness.bench.configuration.suite.resolve_trials`), so that
`--resume` never reuses a result made by other code: upgrading the harness or the
distribution that provides the trial's sampler, model or a metric (and, for an adapted
sampler, the library it runs: diffusers, k-diffusion) changes the hash, and the trial
runs again. A plugin that is not an installed distribution (a module passed
in by a test or a script) has no version to go by; it is named as "unversioned".
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from ...plugin.adapted import installed
from .environment import DISTRIBUTION, version

UNVERSIONED = "unversioned"


def code_versions(plugins: Any, sampler: Optional[str], model: str, metrics: Iterable[str],
                  schedule: Optional[str] = None) -> dict[str, Any]:
    """{"harness": version, "plugins": {distribution: version}} for the distributions
    that provide this sampler (None: no sampler, as for the real-data floor), model,
    these metrics and the time schedule. A built-in schedule adds nothing: the harness's
    own version covers it (and the hashes made before schedules were plugins stand)."""
    origins = [plugins.models.origin(model)]
    if sampler is not None:
        origins.append(plugins.samplers.origin(sampler))
    origins += [plugins.metrics.origin(name) for name in metrics]
    if schedule is not None:
        origin = plugins.schedules.origin(schedule)
        if origin.distribution != DISTRIBUTION:
            origins.append(origin)
    providers = {}
    for origin in origins:
        if origin.distribution:
            providers[origin.distribution] = origin.version or UNVERSIONED
        else:
            providers[f"module {origin.module}"] = UNVERSIONED
    if sampler is not None:
        library = getattr(sys.modules.get(plugins.samplers.origin(sampler).module),
                          "DISTRIBUTION", None)
        if isinstance(library, str):  # an adapted sampler: the library makes its samples
            providers[library] = installed(library) or UNVERSIONED
    return {"harness": version(DISTRIBUTION), "plugins": dict(sorted(providers.items()))}
