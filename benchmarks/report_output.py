"""Where a benchmark script's table goes: the console, and a file replaced whole."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from harness.bench.recording import atomic


def publish(text: str, out: Optional[Path]) -> None:
    """Print `text` and, when `out` is given, replace `out` with it atomically (the
    harness's own results writer), so that a failed write (a full disk, an interruption)
    leaves the previous table whole, never half of the new one."""
    print(text)
    if out is not None:
        atomic.write_text(out, text)
