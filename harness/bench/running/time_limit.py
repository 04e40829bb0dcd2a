"""A time limit on a block of work: when it runs out, `TrialTimeout` is raised inside it.

The clock is the process's real-time interval timer (`signal.setitimer(ITIMER_REAL)`),
whose SIGALRM handler raises the exception wherever the block's Python code is. How far
that reaches:

* Only the main thread receives signals, and some platforms (Windows) have no SIGALRM:
  there the block runs without a limit, after a warning printed once per process.
* A call into C (a long convolution, a blocking read) is interrupted when it returns
  to Python, not during it; a block stuck inside C for ever is not freed by the limit.
* `TrialTimeout` is an `Exception`, so that `harness.core.distributed.shared_failure`
  passes it to every process of a torchrun run (each has its own timer) and the trial
  fails on all of them together. A plugin that catches `Exception` and carries on would
  swallow it: the alarm therefore rings again every `RING_AGAIN_S` until the block ends.
* A process must never leave a collective half-way (the others would wait for it): a
  ring inside `torch.distributed` code is put off by `COLLECTIVE_WAIT_S` until the call
  has returned.

The previous SIGALRM handler and timer are restored when the block ends (an outer timer
keeps counting down from where it was).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

from ...core import distributed

#: After the first ring, the alarm rings again this often until the block ends.
RING_AGAIN_S = 1.0
#: How long a ring that found the process inside a collective waits before ringing again.
COLLECTIVE_WAIT_S = 0.05


class TrialTimeout(Exception):
    """A block of work ran past its time limit."""


_warned = False


def _warn_unenforced(setting: str, seconds: float, reason: str) -> None:
    """Say once per process that a limit is not enforced, and why."""
    global _warned
    if not _warned:
        _warned = True
        distributed.print0(f"warning: {setting} = {seconds:g} s is not enforced: {reason}; "
                           f"the work runs without a time limit", file=sys.stderr)


def _inside_collective(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("torch.distributed"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str, setting: str) -> Iterator[None]:
    """Run the block with at most `seconds` of wall-clock (None: no limit); past it,
    `TrialTimeout("{what} exceeded its time limit of {seconds} s ({setting})")` is
    raised inside the block. `setting` names where the limit is set, for the message."""
    if seconds is None:
        yield
        return
    if not hasattr(signal, "setitimer"):
        _warn_unenforced(setting, seconds, "this platform has no SIGALRM")
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        _warn_unenforced(setting, seconds, "it runs outside the main thread, and only the "
                                           "main thread receives the alarm signal")
        yield
        return

    running = True
    message = f"{what} exceeded its time limit of {seconds:g} s ({setting})"

    def ring(signum: int, frame: FrameType | None) -> None:
        if not running:  # a ring delivered as the block was ending
            return
        if _inside_collective(frame):
            signal.setitimer(signal.ITIMER_REAL, COLLECTIVE_WAIT_S, RING_AGAIN_S)
            return
        raise TrialTimeout(message)

    previous_handler = signal.signal(signal.SIGALRM, ring)
    started = time.monotonic()
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds,
                                                         RING_AGAIN_S)
    try:
        yield
    finally:
        running = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # an outer timer: what was left of it, at least a tick
            left = max(previous_delay - (time.monotonic() - started), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)
