"""Clean-up that a second Ctrl-C does not cut short.

When a suite is interrupted, its tracking runs still have to be ended (KILLED); an
impatient second Ctrl-C (or a SIGTERM from a scheduler) arriving during that clean-up
would otherwise leave them RUNNING forever. Inside `shielded()` the first such signal
only prints that clean-up is under way; a further one gives up on the clean-up (what is
left RUNNING is then closed at the next start, see `harness.bench.stale_runs`).
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


class Interrupted(KeyboardInterrupt):
    """A signal that stops the suite; `exit_code` is what the command exits with."""

    exit_code = EXIT_SIGINT


class Terminated(Interrupted):
    """SIGTERM, raised like Ctrl-C so that every `finally` and interrupt handler runs."""

    exit_code = EXIT_SIGTERM


@contextlib.contextmanager
def shielded(patience: int = 1) -> Iterator[None]:
    """Run a clean-up block that `patience` extra SIGINT/SIGTERM do not interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > patience:
            raise (Terminated if signum == signal.SIGTERM else Interrupted)(
                "interrupted again during clean-up")
        print("interrupt received: ending the tracking runs first (interrupt again to "
              "abandon; they are then closed as KILLED at the next start)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
