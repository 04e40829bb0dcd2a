"""The exit statuses of `harness run`, one per outcome a script may need to tell apart.

    0    every trial FINISHED and everything was recorded
    1    some trial FAILED (the others are recorded; the summary lists each error)
    2    usage error: bad suite, option, name, unwritable output or tracking store,
         not enough memory; said in one line before anything is computed
    3    every trial FINISHED, but not everything was recorded: the tracking store or
         the local record stopped mid-suite, or the report or a trial's sample grid
         could not be written (each said in a warning); the measurements are in what
         remains (`trials.jsonl`, which `--resume` reads, or MLflow)
    130  interrupted by Ctrl-C (SIGINT); 143 terminated by SIGTERM (128 + signal)
"""

from __future__ import annotations

from .running.shield import EXIT_SIGINT, EXIT_SIGTERM

SUCCESS = 0
TRIALS_FAILED = 1
USAGE = 2
RECORDING_INCOMPLETE = 3
INTERRUPTED = EXIT_SIGINT
TERMINATED = EXIT_SIGTERM


def suite_exit_code(any_failed: bool, recording_complete: bool) -> int:
    """A failed trial outranks an incomplete record: it needs fixing, not rerunning."""
    if any_failed:
        return TRIALS_FAILED
    return SUCCESS if recording_complete else RECORDING_INCOMPLETE
