"""Where a suite's records and report go (OUT/<experiment>/), and only one run at a time.

The experiment name comes from a suite file or `--experiment`, and is also the folder
name under `--out`. A name such as `../../x` or `/tmp/x` would put the records outside
`--out`: it is refused before anything is written. MLflow names with `/` (a Databricks
workspace path such as `team/sampler-study`) stay allowed: they make subfolders of
`--out`.

Two runs writing into one folder would interleave their trials in `trials.jsonl` and
each write a report of its own trials only, the last one winning. A run holds the folder
for its whole length through an OS file lock (released by the kernel when the process
ends, however it ends), and a second run into the same folder is refused, naming the
process that holds it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from filelock import FileLock, Timeout

from ..configuration.suite_schema import SuiteError

#: In the report folder: the lock, and who holds it (the lock file itself stays empty:
#: a run that fails to take the lock has opened, and so truncated, it).
LOCK_NAME = ".harness-run.lock"
HOLDER_NAME = ".harness-run.holder"


def report_folder(out: Path, experiment: str) -> Path:
    """OUT/<experiment>; SuiteError when the name would leave OUT."""
    parts = [p for p in PureWindowsPath(experiment).parts]  # splits on / and \ alike
    if (not experiment.strip() or PurePosixPath(experiment).is_absolute()
            or PureWindowsPath(experiment).anchor or any(p in ("..", ".") for p in parts)):
        raise SuiteError(f"experiment name {experiment!r} cannot name a folder inside "
                         f"--out ({out}): use a name without '..', '.' or a leading '/' "
                         f"(set `experiment =` in the suite or pass --experiment)")
    return Path(out) / experiment


@contextlib.contextmanager
def held(folder: Path) -> Iterator[None]:
    """Hold `folder` for this run; SuiteError naming the holder when another run does."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SuiteError(f"another harness run is writing into {folder} "
                         f"({_holder(folder)}); wait for it to finish, or pass another "
                         f"--out or --experiment") from None
    try:
        with contextlib.suppress(OSError):  # who holds it is for the message only
            (folder / HOLDER_NAME).write_text(
                f"PID {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_NAME).unlink()
        # The lock file stays (empty, ignored by git): removing it would let a run that
        # opened it just before lock a file no longer in the folder.
        lock.release()


def _holder(folder: Path) -> str:
    try:
        return (folder / HOLDER_NAME).read_text().strip() or "process unknown"
    except OSError:
        return "process unknown"
