"""The ``harness`` command: each subcommand lives in its own module under `commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Optional, Sequence

from .bench.running.shield import interrupts_raise
from .errors import HarnessError
from .plugin.manager import DISABLE_ENV, TRACE_ENV, get_plugins

#: Subcommand modules; each provides add_parser(subparsers) and sets a `func` default.
COMMANDS = ("plugins", "run", "report", "train", "schema", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Benchmark diffusion-model samplers.")
    parser.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                        help=f"do not load this plugin (repeatable; also ${DISABLE_ENV})")
    parser.add_argument("--trace-hooks", action="store_true",
                        help=f"print every plugin hook call to stderr (also ${TRACE_ENV})")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").add_parser(subparsers)
    return parser


def console() -> int:
    """The `harness` command: `main`, then the process exits with its status.

    The signal handler stays in place (`harness.bench.running.shield.interrupts_raise`), and once
    the command is over SIGINT and SIGTERM are blocked: a late Ctrl-C arriving while the
    interpreter shuts down (atexit handlers, module teardown, after which Python restores
    the default handlers) must not turn the status into a death by signal. Blocked
    signals stay pending and end with the process."""
    code = main(restore_signals=False)
    if hasattr(signal, "pthread_sigmask"):  # POSIX
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    return code


def main(argv: Optional[Sequence[str]] = None, restore_signals: bool = True) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.disable_plugin:
        current = [n for n in os.environ.get(DISABLE_ENV, "").split(",") if n]
        os.environ[DISABLE_ENV] = ",".join(current + args.disable_plugin)
    if args.trace_hooks:
        os.environ[TRACE_ENV] = "1"
    if args.disable_plugin or args.trace_hooks:
        get_plugins(refresh=True)  # the options must apply even if plugins were loaded
    # One handler from here to the exit: the first Ctrl-C or SIGTERM stops the command,
    # later ones cannot cut its clean-up short (`harness.bench.running.shield`).
    with interrupts_raise(restore=restore_signals):
        try:
            return int(args.func(args) or 0)
        except HarnessError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:  # 130 for Ctrl-C, 143 for SIGTERM (128 + signal)
            print("interrupted", file=sys.stderr)
            return int(getattr(err, "exit_code", 130))


if __name__ == "__main__":
    sys.exit(console())
