"""The machine's load average around a benchmark module, for the tables it writes."""

from __future__ import annotations

import os


def load_average() -> tuple[float, float, float]:
    """(1, 5, 15)-minute load averages, as `uptime` prints them; NaN where unavailable."""
    try:
        return os.getloadavg()
    except OSError:  # not on every platform
        return (float("nan"),) * 3


def load_line(start: tuple[float, float, float], end: tuple[float, float, float]) -> str:
    """One sentence for a results table: the load when its benchmarks started and ended."""
    def fmt(load: tuple[float, float, float]) -> str:
        return ", ".join(f"{v:.2f}" for v in load)

    return (f"Load average (1, 5, 15 min; {os.cpu_count()} CPUs) when these benchmarks "
            f"started: {fmt(start)}; when they ended: {fmt(end)}.")
