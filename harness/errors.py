"""Errors the harness raises for bad input: each says what was wrong and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class for errors caused by user input or plugins, reported without a traceback."""


class UnknownNameError(HarnessError, KeyError):
    """A name (sampler, model, schedule, metric, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParameterError(HarnessError, ValueError):
    """A parameter outside its allowed range or of the wrong type; raised before any compute."""


class PluginError(HarnessError):
    """A plugin that failed to load or broke the hook specification."""


def unknown_name(kind: str, name: str, available: Iterable[str]) -> UnknownNameError:
    """An UnknownNameError naming close matches and everything that exists."""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(names) if names else "(none registered)"
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Available: {listing}")
