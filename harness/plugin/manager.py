"""Finds plugins through the ``harness`` entry-point group and collects what they register.

Loading never stops at a broken plugin: a plugin that fails to import, breaks the hook
specification, states an incompatible API version or raises while registering is
recorded in `LoadedPlugins.failures` with a clear message, and the others load. The
registries know the failures: asking for a name that no loaded plugin provides names the
plugin that failed and, where its registrations were seen, that it would have provided it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import pluggy

from .. import hookspecs
from ..errors import PluginError
from .registry import ModelSpec, Origin, Registry
from ..core.sampler import Sampler
from ..core.time_grid import Schedule

ENTRY_POINT_GROUP = "harness"
HARNESS_DIST = "diffusion-sampler-harness"
TRACE_ENV = "HARNESS_TRACE_HOOKS"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"


@dataclass(frozen=True)
class SinkSpec:
    """A sink a plugin provides (`harness_register_sinks`): `make(context)` is called
    once per run with a `harness.bench.recording.sinks.SinkContext` and returns the sink, or None
    to stay out of that run."""

    name: str
    make: Callable[[Any], Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not callable(self.make):
            raise PluginError(f"a sink needs a name and a callable factory, got "
                              f"{self.name!r} and {self.make!r}")


#: hook name -> (registry attribute, expected type or None, and for a hook whose
#: `register` takes the parts of an item rather than the item, what makes it of them)
REGISTRATION_HOOKS: dict[str, tuple[str, Optional[type], Optional[Callable[..., Any]]]] = {
    "harness_register_samplers": ("samplers", Sampler, None),
    "harness_register_schedules": ("schedules", Schedule, None),
    "harness_register_models": ("models", ModelSpec, None),
    "harness_register_metrics": ("metrics", None, None),
    "harness_register_sinks": ("sinks", SinkSpec, SinkSpec),
}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that did not load, and why."""

    plugin: str
    stage: str  # "import", "api-version", "hook-spec" or "register"
    message: str
    #: Names the plugin tried to register, by kind ("sampler", ...), where known.
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed at {self.stage}: {self.message}"


@dataclass
class LoadedPlugins:
    """Everything the loaded plugins registered, plus the plugins that failed."""

    samplers: Registry[Sampler] = field(default_factory=lambda: Registry("sampler"))
    models: Registry[ModelSpec] = field(default_factory=lambda: Registry("model"))
    schedules: Registry[Schedule] = field(default_factory=lambda: Registry("schedule"))
    metrics: Registry[Any] = field(default_factory=lambda: Registry("metric"))
    sinks: Registry[SinkSpec] = field(default_factory=lambda: Registry("sink"))
    plugins: list[Origin] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    manager: Optional[pluggy.PluginManager] = None


def disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _dist_of(ep: Any) -> tuple[Optional[str], Optional[str]]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def load_plugins(*, entry_points: Optional[Iterable[Any]] = None,
                 extra: Iterable[tuple[str, Any]] = (),
                 disabled: Optional[Iterable[str]] = None,
                 trace: Optional[bool] = None) -> LoadedPlugins:
    """Load plugins and collect their registrations.

    Args:
        entry_points: entry points to load (default: the ``harness`` group of every
            installed distribution). Anything with ``name``, ``load()`` and optional
            ``dist`` works, which is how tests load deliberately broken plugins.
        extra: (name, plugin object) pairs registered in addition, e.g. a test module.
        disabled: plugin names not to load (default: ``$HARNESS_DISABLE_PLUGINS``).
        trace: print every hook call to stderr (default: ``$HARNESS_TRACE_HOOKS``).
    """
    loaded = LoadedPlugins()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded.manager = pm
    if trace if trace is not None else bool(os.environ.get(TRACE_ENV)):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    skip = set(disabled_from_env() if disabled is None else disabled)
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)

    candidates: list[tuple[str, Callable[[], Any], Origin]] = []
    # Built-ins load first, so a third-party plugin can never take a built-in's name.
    for ep in sorted(entry_points, key=lambda e: (_dist_of(e)[0] != HARNESS_DIST, e.name)):
        dist, version = _dist_of(ep)
        origin = Origin(ep.name, getattr(ep, "value", ep.name), dist, version)
        candidates.append((ep.name, ep.load, origin))
    for name, obj in extra:
        module = getattr(obj, "__name__", type(obj).__name__)
        candidates.append((name, lambda obj=obj: obj, Origin(name, module)))

    registered: list[tuple[object, Origin]] = []
    for name, load, origin in candidates:
        if name in skip:
            loaded.disabled.append(name)
            continue
        plugin = _import_and_register(pm, name, load, origin, loaded.failures)
        if plugin is not None:
            module = getattr(plugin, "__name__", origin.module)
            origin = Origin(origin.plugin, module, origin.distribution, origin.version)
            registered.append((plugin, origin))
            loaded.plugins.append(origin)

    for plugin, origin in registered:
        _collect(pm, plugin, origin, loaded)
    for registry in (loaded.samplers, loaded.models, loaded.metrics, loaded.schedules,
                     loaded.sinks):
        registry.failures = loaded.failures
    return loaded


def api_version_problem(wanted: Any) -> Optional[str]:
    """Why a plugin's `harness_api_version` cannot be used, or None if it matches."""
    provided = hookspecs.HARNESS_API_VERSION
    if isinstance(wanted, bool) or not isinstance(wanted, int):
        return (f"harness_api_version must be an integer (this harness provides "
                f"{provided}), got {type(wanted).__name__} {wanted!r}; write "
                f"harness_api_version = {provided} if the plugin is written for it")
    if wanted != provided:
        return (f"written for harness API version {wanted}, but this harness provides "
                f"version {provided}; install a harness release for API {wanted} or "
                f"update the plugin")
    return None


def _import_and_register(pm: pluggy.PluginManager, name: str, load: Callable[[], Any],
                         origin: Origin, failures: list[PluginFailure]) -> Optional[object]:
    try:
        plugin = load()
    except Exception as err:  # a broken plugin must not stop the others
        failures.append(PluginFailure(name, "import", f"{type(err).__name__}: {err}"))
        return None
    problem = api_version_problem(
        getattr(plugin, "harness_api_version", hookspecs.HARNESS_API_VERSION))
    if problem is not None:
        failures.append(PluginFailure(name, "api-version", problem))
        return None
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except (pluggy.PluginValidationError, ValueError) as err:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        failures.append(PluginFailure(name, "hook-spec", str(err)))
        return None
    return plugin


def _collect(pm: pluggy.PluginManager, plugin: object, origin: Origin,
             loaded: LoadedPlugins) -> None:
    """Call each registration hook of one plugin; keep its registrations only if all work."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    pending: list[tuple[Registry, str, Any]] = []
    try:
        for hook_name, (attr, expected, make) in REGISTRATION_HOOKS.items():
            registry = getattr(loaded, attr)

            def register(*parts: Any, registry=registry, expected=expected, make=make,
                         **named: Any) -> None:
                item = make(*parts, **named) if make is not None else parts[0]
                if expected is not None and not isinstance(item, expected):
                    raise PluginError(f"{hook_name} expects {expected.__name__} objects, "
                                      f"got {type(item).__name__}")
                name = getattr(item, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(f"{hook_name}: registered object has no name")
                pending.append((registry, name, item))

            pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
        for registry, name, item in pending:
            if name in registry:
                raise PluginError(f"{registry.kind} {name!r} is already registered by "
                                  f"{registry.origin(name)}")
        for registry, name, item in pending:
            registry.add(name, item, origin)
    except Exception as err:
        provides: dict[str, tuple[str, ...]] = {}
        for registry, name, _ in pending:
            provides[registry.kind] = (*provides.get(registry.kind, ()), name)
        loaded.failures.append(PluginFailure(origin.plugin, "register",
                                             f"{type(err).__name__}: {err}", provides))
        loaded.plugins.remove(origin)


_default: Optional[LoadedPlugins] = None


def get_plugins(refresh: bool = False) -> LoadedPlugins:
    """The installed plugins, loaded once per process."""
    global _default
    if _default is None or refresh:
        _default = load_plugins()
    return _default


def failure_lines(loaded: LoadedPlugins) -> list[str]:
    """One line per plugin that failed to load, as commands print them."""
    return [f"warning: {failure}" for failure in loaded.failures]


def get_sampler(name: str) -> Sampler:
    return get_plugins().samplers.get(name)
