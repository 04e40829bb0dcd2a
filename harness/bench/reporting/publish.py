"""A run's report, published into its folder: tables and plots made from `trials.jsonl`
in a staging folder, then moved into place file by file (atomic renames), so that a full
disk never leaves a torn table or an empty plot. A report that cannot be written is a
warning, never a lost measurement: every trial is in `trials.jsonl` either way."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..recording.atomic import publish_folder


def publish_report(out_dir: Path, hashes: set[str], title: str,
                   rank_across_schedules: bool = False) -> Optional[Any]:
    """The report of the trials with configuration hashes `hashes` (this suite's, run now
    or before), written into `out_dir`; its `WrittenReport`, or None (with a warning on
    stderr) when it could not be written."""
    from .report import records_from_jsonl, write_report  # pandas, matplotlib

    staging = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-"))
        results = records_from_jsonl(out_dir / "trials.jsonl", hashes)
        results.rank_across_schedules = rank_across_schedules
        report = write_report(results, staging, title=title)
        publish_folder(staging, out_dir)
        return dataclasses.replace(report, files={
            k: out_dir / Path(v).relative_to(staging) for k, v in report.files.items()})
    except Exception as err:  # the measurements are safe in trials.jsonl either way
        print(f"warning: the report could not be written to {out_dir}/ "
              f"({type(err).__name__}: {err}); every trial is in "
              f"{out_dir / 'trials.jsonl'}", file=sys.stderr)
        return None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
