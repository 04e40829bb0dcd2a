"""Closing tracking runs that a dead process left RUNNING.

A run can only be ended by the process that created it; `kill -9`, a power cut, or a
tracking server that was unreachable while the suite was being interrupted leave it
RUNNING forever. Every run the harness creates carries the tags `harness.host`,
`harness.pid` and `harness.pid_started` (the process's start time, so that a recycled
pid is not mistaken for the original process). At the start of a suite, the runs of the
experiment still RUNNING whose process, on this host, no longer exists are ended as
KILLED with a tag saying why. Runs from other hosts are left alone: whether their
process lives cannot be known from here.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Optional

HOST_TAG, PID_TAG, STARTED_TAG = "harness.host", "harness.pid", "harness.pid_started"
CLOSED_TAG = "harness.closed_as_stale"


def process_start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux `/proc`), else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # The command name (field 2) may hold spaces; fields resume after its ')'.
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tags() -> dict[str, str]:
    """The tags identifying this process, for every run it creates."""
    pid = os.getpid()
    tags = {HOST_TAG: platform.node(), PID_TAG: str(pid)}
    started = process_start_time(pid)
    if started is not None:
        tags[STARTED_TAG] = started
    return tags


def process_is_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's tags surely no longer exists on this host."""
    if tags.get(HOST_TAG) != platform.node() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        pass
    started = tags.get(STARTED_TAG)
    now = process_start_time(pid)
    return started is not None and now is not None and now != started  # pid recycled


def close_stale_runs(client: Any, experiment_id: str) -> list[Any]:
    """End as KILLED every RUNNING run of the experiment whose process is gone; returns
    the runs closed."""
    closed, token = [], None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if process_is_gone(tags):
                client.set_tag(run.info.run_id, CLOSED_TAG,
                               f"process {tags[PID_TAG]} on {tags[HOST_TAG]} no longer "
                               f"exists; closed by process {os.getpid()}")
                client.set_terminated(run.info.run_id, status="KILLED")
                closed.append(run)
        token = page.token
        if not token:
            return closed
