"""Running a suite: the plan resolved once after the model loads (`plan`), the runner
that carries it out (batches, per-sample seeds, warm-up, timing, failures isolated), and
what guards it (memory, interrupts, time limits, the real-data floor's draws).

Layer 5.4: it may import configuration, recording and reporting (a trial's sample grid
is a plot) and the layers below.
"""
