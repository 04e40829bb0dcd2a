"""Reporting what was recorded: the leaderboard and tables (`report`), paired comparisons
and conclusions, implementations side by side, and the plots.

Layer 5.3: it may import `harness.bench.recording`, `harness.bench.configuration` and
the layers below; it reads records and never runs anything.
"""
