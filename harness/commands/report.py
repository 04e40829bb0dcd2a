"""``harness report``: read an experiment's runs back from MLflow; write tables and plots.

`harness report SUITE` reports what `harness run SUITE` recorded: the same positional
argument (a packaged suite or a TOML file, whose experiment is read back), or an
experiment name given with `harness run --experiment`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..bench.recording.atomic import check_writable
from ..bench.recording.report_folder import report_folder
from ..bench.configuration.suite_files import recorded_in
from ..bench.recording.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri
from .options import add_out_option, add_suite_argument


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="leaderboard and plots of a suite's experiment, read back from MLflow",
        description="Read every run of the MLflow experiment that `harness run SUITE` "
                    "records into (mlflow.search_runs) and write OUT/<experiment>/ "
                    "(default: runs/): leaderboard.csv, leaderboard.md, trials.csv and "
                    "the plots FID vs NFE, NLL vs NFE and FID vs wall-clock.")
    add_suite_argument(parser, "what `harness run` was given: a packaged suite name or a "
                               "TOML file (its experiment is reported), or an experiment "
                               "name")
    parser.add_argument("--experiment",
                        help="the MLflow experiment, when it is not the suite's (as with "
                             "`harness run SUITE --experiment NAME`)")
    parser.add_argument("--tracking-uri",
                        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                             f"suite's, else {DEFAULT_TRACKING_URI})")
    add_out_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.reporting.report import report_from_mlflow  # pandas, matplotlib: this command only

    # As in `harness run`: --experiment and --tracking-uri override the suite's own.
    experiment, suite_uri = recorded_in(args.suite)
    uri = resolve_tracking_uri(args.tracking_uri, suite_uri)
    experiment = args.experiment or experiment
    check_writable(report_folder(Path(args.out), experiment))  # before reading runs back
    report = report_from_mlflow(uri, experiment, args.out)
    print(report.files["leaderboard.md"].read_text())
    print(f"written: {', '.join(str(p) for p in report.files.values())}")
    return 0
