"""How long the quick commands take, against `import torch` alone (pytest-benchmark).

    ratio = CPU time of `python -m harness.cli ARGS` / CPU time of `python -c "import torch"`

each a fresh interpreter (user + system seconds of the child, which other jobs on a
shared machine inflate far less than wall-clock time), the two interleaved round by
round; medians [min-max] over rounds go to `results/microbench/cli.md`. Every command
must import torch (the models are torch modules), so 1.0 is the floor; the goal is
<= 1.2: the rest of the package, the plugins and argparse, but no pandas, matplotlib or
MLflow (`tests/test_cli_imports.py` checks that they are not imported).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from machine_load import load_average, load_line  # benchmarks/ is on sys.path under pytest

ROUNDS = 5
GOAL = 1.2
COMMANDS = {"harness --help": ["--help"], "harness plugins": ["plugins"],
            "harness run default --dry-run": ["run", "default", "--dry-run"]}
OUT = Path(os.environ.get("HARNESS_MICROBENCH_OUT",
                          Path(__file__).resolve().parents[1] / "results" / "microbench"))


def _seconds(argv: list[str]) -> float:
    """User + system CPU seconds of the command."""
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "MPLBACKEND": "Agg"})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, argv)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def table() -> Iterator[dict[str, dict]]:
    rows: dict[str, dict] = {}
    start = load_average()
    yield rows
    if rows:
        lines = ["# Command latency / `import torch`", "",
                 f"Fresh interpreter each, interleaved with `python -c \"import torch\"`; "
                 f"user + system CPU seconds of the child; "
                 f"median [min-max] over {ROUNDS} rounds; goal <= {GOAL}. Written by "
                 f"`benchmarks/test_cli_latency.py` (`tox -e microbench`). "
                 f"{load_line(start, load_average())}", "",
                 "| command | CPU s | import torch (CPU s) | ratio |", "|---|---|---|---|"]
        for name, row in rows.items():
            r = row["ratios"]
            lines.append(f"| `{name}` | {row['seconds']:.2f} | {row['torch_seconds']:.2f} "
                         f"| {statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}] |")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "cli.md").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", COMMANDS)
def test_command_latency(benchmark, table, name):
    pairs: list[tuple[float, float]] = []

    def interleaved():
        pairs.append((_seconds([sys.executable, "-m", "harness.cli", *COMMANDS[name]]),
                      _seconds([sys.executable, "-c", "import torch"])))

    benchmark.pedantic(interleaved, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    pairs = pairs[-ROUNDS:]
    row = {"ratios": [a / b for a, b in pairs],
           "seconds": statistics.median(a for a, _ in pairs),
           "torch_seconds": statistics.median(b for _, b in pairs)}
    benchmark.extra_info.update(row, goal=GOAL)
    table[name] = row
