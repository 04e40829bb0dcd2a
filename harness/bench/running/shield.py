"""Ctrl-C and SIGTERM: the first stops the suite, the clean-up after it is not cut short.

When a suite is interrupted, its tracking runs still have to be ended (KILLED); an
impatient second Ctrl-C (or a SIGTERM from a scheduler) arriving during that clean-up
would otherwise leave them RUNNING forever. One handler serves the whole command
(`interrupts_raise`, installed by `harness.cli`): the first signal raises `Interrupted`
(or `Terminated`) at once, so every `finally` runs and the current trial is ended as
KILLED; from then on the clean-up is shielded: one further signal only prints that the
clean-up is under way, and another gives up on it (what is left RUNNING is then closed at
the next start, see `harness.bench.recording.stale_runs`). Because the handler stays installed
from the first signal to the command's exit, no second signal can meet Python's default
handler half-way through the clean-up. A clean-up block that runs without any signal
(`shielded()`, e.g. ending the suite's run) holds off a first signal the same way.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

#: Exit statuses of the signals the harness handles: 128 + the signal number.
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Signals held off during clean-up before the next one abandons it.
PATIENCE = 1


class Interrupted(KeyboardInterrupt):
    """A signal that stops the suite; `exit_code` is what the command exits with."""

    exit_code = EXIT_SIGINT


class Terminated(Interrupted):
    """SIGTERM, raised like Ctrl-C so that every `finally` and interrupt handler runs."""

    exit_code = EXIT_SIGTERM


#: raised: signals turned into exceptions; held: signals held off in the current stretch
#: of clean-up (each `shielded()` block starts its own); cleaning: open `shielded()` blocks.
_state = {"raised": 0, "held": 0, "cleaning": 0}


def _handler(signum: int, frame: Any) -> None:
    cleaning = _state["raised"] > 0 or _state["cleaning"] > 0
    if cleaning and _state["held"] < PATIENCE:
        _state["held"] += 1
        print("interrupt received: ending the tracking runs first (interrupt again to "
              "abandon; they are then closed as KILLED at the next start)", file=sys.stderr)
        return
    _state["raised"] += 1
    if signum == signal.SIGTERM:
        raise Terminated("terminated by SIGTERM")
    raise Interrupted("interrupted" if _state["raised"] == 1
                      else "interrupted again during clean-up")


def _installed() -> bool:
    return signal.getsignal(signal.SIGINT) is _handler


@contextlib.contextmanager
def interrupts_raise(restore: bool = True) -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM for the duration (main thread only;
    nested uses keep the outer installation and its count). `restore=False` leaves it
    installed afterwards: for a process about to exit, whose interpreter shutdown (atexit
    handlers, MLflow's among them) a late signal must not turn into a death by signal."""
    if threading.current_thread() is not threading.main_thread() or _installed():
        yield
        return
    _state.update(raised=0, held=0, cleaning=0)
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    try:
        yield
    finally:
        if restore:
            for sig, old in previous.items():
                signal.signal(sig, old)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A clean-up block that a first signal does not interrupt (`PATIENCE` of them)."""
    with interrupts_raise():
        held = _state["held"]
        _state["cleaning"] += 1
        _state["held"] = 0
        try:
            yield
        finally:
            _state["cleaning"] -= 1
            _state["held"] = held
