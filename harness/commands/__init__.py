"""Subcommands of the ``harness`` command line, one module each."""
