"""Named registries of what plugins provide, each entry remembering where it came from.

A registry also knows the plugins that failed to load (set by the plugin manager), so
that an unknown name is answered with the broken plugin that would have provided it
rather than a bare "unknown sampler".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from ..errors import ParameterError, PluginError, UnknownNameError, unknown_name

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Where a registered thing comes from: the plugin, its module and distribution."""

    plugin: str
    module: str
    distribution: Optional[str] = None
    version: Optional[str] = None

    def to_dict(self) -> dict[str, Optional[str]]:
        return {"plugin": self.plugin, "module": self.module,
                "distribution": self.distribution, "version": self.version}

    def __str__(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"{self.module}{dist}"


@dataclass(frozen=True)
class ModelSpec:
    """A score model a plugin provides; `load(device, **options)` builds it on demand."""

    name: str
    load: Callable[..., Any]
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)
    #: Classes of a class-conditional model (labels 0 .. num_classes - 1); 0: none; None:
    #: known only once loaded (e.g. a diffusers UNet read from a directory). Says, before
    #: the model is loaded, whether a suite may guide it.
    num_classes: Optional[int] = 0
    #: False for a benchmark-only model with untrained weights (as its loaded
    #: `ScoreModel.trained`): says, before it is loaded, that quality metrics are refused.
    trained: bool = True

    def __post_init__(self) -> None:
        if not self.name or not callable(self.load):
            raise PluginError(f"ModelSpec needs a name and a callable load, got {self.name!r}")

    def build(self, device: Any = "cpu", **options: Any) -> Any:
        """Load the model, refusing options it does not declare; an option value the
        loader cannot use (`sde = 5`) is one clear error naming the options."""
        for key in options:
            if key not in self.options:
                raise unknown_name(f"option of model {self.name!r}", key, self.options)
        try:
            return self.load(device, **options)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            if not options or isinstance(err, PluginError):
                raise
            given = ", ".join(f"{k} = {v!r}" for k, v in options.items())
            raise ParameterError(f"model {self.name!r} cannot be built with model_options "
                                 f"{given}: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class Entry(Generic[T]):
    item: T
    origin: Origin


class Registry(Generic[T]):
    """Things of one kind by name; unknown names are refused with suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        #: Plugins that failed to load (`PluginFailure`s), for unknown-name messages.
        self.failures: list[Any] = []

    def add(self, name: str, item: T, origin: Origin) -> None:
        if name in self._entries:
            first = self._entries[name].origin
            raise PluginError(f"{self.kind} {name!r} registered twice: by {first} "
                              f"and by {origin}")
        self._entries[name] = Entry(item, origin)

    def get(self, name: str) -> T:
        if name not in self._entries:
            error = unknown_name(self.kind, name, self._entries)
            note = self._failed_provider(name)
            raise UnknownNameError(f"{error} {note}") if note else error
        return self._entries[name].item

    def _failed_provider(self, name: str) -> str:
        """Which failed plugin would have provided `name`: the one seen registering it,
        else every failed plugin whose registrations are unknown (it may be any)."""
        known = [f for f in self.failures if name in f.provides.get(self.kind, ())]
        if known:
            f = known[0]
            return (f"Plugin {f.plugin!r}, which provides {self.kind} {name!r}, failed to "
                    f"load at {f.stage}: {f.message}")
        unknown = [f for f in self.failures if not f.provides]
        if not unknown:
            return ""
        listing = "; ".join(f"{f.plugin!r} (at {f.stage}: {f.message})" for f in unknown)
        return (f"{len(unknown)} plugin(s) failed to load and may provide it: {listing}")

    def origin(self, name: str) -> Origin:
        self.get(name)
        return self._entries[name].origin

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[tuple[str, Entry[T]]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
