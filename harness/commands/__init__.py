"""Subcommands of the ``harness`` command line, one module each.

Layer 6, the top: it may import every layer; nothing in the package imports it but
`harness.cli`.
"""
