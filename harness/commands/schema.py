"""``harness schema``: the JSON Schema of a suite file, for editors to complete and check.

The schema carries the installed plugins' names: each model's options, each sampler's
hyperparameters with their types, defaults, ranges and choices, each metric's options.
Regenerate it after installing or upgrading a plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import HarnessError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schema", help="print the JSON Schema of suite files (for editors)",
        description="Print the JSON Schema (draft 2020-12) of a suite TOML file, with the "
                    "installed models, samplers (and their hyperparameters) and metrics. "
                    "Point an editor at it, e.g. a first line `#:schema suite.schema.json` "
                    "in a suite file for taplo / Even Better TOML.")
    parser.add_argument("--out", metavar="FILE",
                        help="write the schema to FILE instead of standard output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `harness --help` should not pay for pydantic and the bench layer.
    from ..bench.configuration.suite_jsonschema import suite_json_schema
    from ..plugin.manager import get_plugins

    text = json.dumps(suite_json_schema(get_plugins()), indent=2, allow_nan=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    write_atomically(Path(args.out), text)
    print(f"written: {args.out}", file=sys.stderr)
    return 0


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename: never a torn file."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    except OSError as err:
        raise HarnessError(f"cannot write {str(path)!r}: {err.strerror}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as err:
        os.unlink(temporary)
        raise HarnessError(f"cannot write {str(path)!r}: {err.strerror}") from None
