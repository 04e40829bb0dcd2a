"""The fault-injection tests' tools: the real `harness` command in a subprocess, plugin
distributions installed into a temporary target folder (a dist-info with an entry point,
which is what pip writes), and waiting for a suite to reach a point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
WAIT_LIMIT_S = 240  # generous: the machine is shared

FAULT_SUITE = """
experiment = "{experiment}"
model = "gmm-ring-2d"
steps = [2, 3, 4]
seeds = [0]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.{sampler}]

[metrics.msn]
"""


def install_distribution(target: Path, name: str, version: str, modules: dict[str, str],
                         entry_points: dict[str, str]) -> Path:
    """Install a distribution `name==version` into `target` as pip --target would lay it
    out: its modules, and a dist-info with METADATA and the `harness` entry points."""
    target.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (target / f"{module}.py").write_text(source)
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                   f"Version: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[harness]\n{lines}")
    (info / "RECORD").write_text("")
    return target


def fault_plugins(target: Path) -> Path:
    """tests/plugins/fault_plugins.py and bench_plugins.py (for its `msn` metric)
    installed as the distribution `fault-plugins`."""
    return install_distribution(target, "fault-plugins", "1.0", {},
                                {"fault_plugins": "tests.plugins.fault_plugins",
                                 "bench_plugins": "tests.plugins.bench_plugins"})


def cli_env(*paths: Path, **extra: str) -> dict[str, str]:
    """The environment of a `harness` subprocess: these folders (and the repository, for
    `tests.plugins`) on its path, no inherited tracking URI, one thread."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def start_cli(args: list[str], cwd: Path, env: dict[str, str],
              preexec_fn: Optional[Callable[[], None]] = None) -> subprocess.Popen:
    """`harness ARGS` started in `cwd`; its stdout and stderr are read at `finish`."""
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec_fn)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for the process; (exit status, stdout, stderr)."""
    out, err = process.communicate(timeout=WAIT_LIMIT_S)
    return process.returncode, out, err


def run_cli(args: list[str], cwd: Path, env: dict[str, str],
            preexec_fn: Optional[Callable[[], None]] = None) -> tuple[int, str, str]:
    return finish(start_cli(args, cwd, env, preexec_fn))


def records(path: Path) -> list[dict]:
    """Every line of a trials.jsonl, each of which must be complete JSON."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Callable[[], bool], process: Optional[subprocess.Popen] = None,
             what: str = "the condition") -> None:
    """Poll until `condition()` holds; fails if `process` ends first or time runs out."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process ended ({process.returncode}) before "
                                 f"{what}:\n{out}\n{err}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {WAIT_LIMIT_S} s")


def trials_recorded(path: Path, count: int) -> Callable[[], bool]:
    """A condition: `count` trial lines are in the trials.jsonl at `path`."""
    def condition() -> bool:
        try:
            return sum(r.get("kind") == "trial" for r in records(path)) >= count
        except json.JSONDecodeError:  # a line being written right now
            return False
    return condition


def interrupt(process: subprocess.Popen, signum: int = signal.SIGINT) -> None:
    process.send_signal(signum)
