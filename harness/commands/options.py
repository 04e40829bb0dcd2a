"""The arguments that commands share, spelled the same way in each: the suite named
positionally (`harness run default`, `harness report default`) and the output folder.

The output folder defaults to `runs/` in the working directory, which git ignores: the
repository's committed reference results in `results/` are written only when a user
asks for them with `--out results`.
"""

from __future__ import annotations

import argparse

from ..bench.configuration.suite import DEFAULT_SUITE

DEFAULT_OUT = "runs"


def add_suite_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("suite", nargs="?", default=DEFAULT_SUITE, metavar="SUITE",
                        help=f"{help} (default: {DEFAULT_SUITE})")


def add_out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"writes FOLDER/<experiment>/ (default: {DEFAULT_OUT}/ in the "
                             f"working directory; the committed results/ only with "
                             f"--out results)")
