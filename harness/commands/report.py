"""``harness report``: read an experiment's runs back from MLflow; write tables and plots."""

from __future__ import annotations

import argparse
from typing import Any

from ..bench.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

DEFAULT_EXPERIMENT = "default"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="leaderboard and plots of an experiment, read back from MLflow",
        description="Read every run of an MLflow experiment (mlflow.search_runs) and write "
                    "OUT/<experiment>/: leaderboard.csv, leaderboard.md, trials.csv and "
                    "the plots FID vs NFE, NLL vs NFE and FID vs wall-clock.")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT!r}, the "
                             f"default suite's)")
    parser.add_argument("--tracking-uri",
                        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                             f"{DEFAULT_TRACKING_URI})")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import report_from_mlflow  # pandas, matplotlib: this command only

    uri = resolve_tracking_uri(args.tracking_uri)
    report = report_from_mlflow(uri, args.experiment, args.out)
    print(report.files["leaderboard.md"].read_text())
    print(f"written: {', '.join(str(p) for p in report.files.values())}")
    return 0
