"""Named registries of what plugins provide, each entry remembering where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from ..errors import PluginError, unknown_name

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

    def __post_init__(self) -> None:
        if not self.name or not callable(self.load):
            raise PluginError(f"ModelSpec needs a name and a callable load, got {self.name!r}")

    def build(self, device: Any = "cpu", **options: Any) -> Any:
        """Load the model, refusing options it does not declare."""
        for key in options:
            if key not in self.options:
                raise unknown_name(f"option of model {self.name!r}", key, self.options)
        return self.load(device, **options)


@dataclass(frozen=True)
class Entry(Generic[T]):
    item: T
    origin: Origin


class Registry(Generic[T]):
    """Things of one kind by name; unknown names are refused with suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, item: T, origin: Origin) -> None:
        if name in self._entries:
            first = self._entries[name].origin
            raise PluginError(f"{self.kind} {name!r} registered twice: by {first} "
                              f"and by {origin}")
        self._entries[name] = Entry(item, origin)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name].item

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
