"""Best/tied marks and the floor flag follow each metric's direction: the largest
precision is the best, the smallest distance is (a metric whose larger values are better
must not get ★ for its worst row)."""

import pandas as pd

from harness.bench.reporting.comparison import BEST, conclude


def _board_and_table(values):
    board = pd.DataFrame([{"label": name, "sampler": name, "variant": "", "steps": 10,
                           "seeds": 1, "nfe_mean": 10.0, "m_mean": value, "m_std": None}
                          for name, value in values.items()])
    table = pd.DataFrame([{"label": name, "sampler": name, "variant": "", "steps": 10,
                           "seed": 0, "config_hash": name} for name in values])
    # Replicates far apart (no tie): each row's value with a tiny spread.
    replicates = {name: {"m": [value + 1e-3 * (i % 3 - 1) for i in range(50)]}
                  for name, value in values.items()}
    return board, table, replicates


def test_the_largest_value_is_best_when_higher_is_better():
    board, table, replicates = _board_and_table({"a": 0.2, "b": 0.9})
    found = conclude(board, table, replicates, higher_is_better={"m": True})
    assert found.marks[(1, "m")] == BEST and (0, "m") not in found.marks
    found = conclude(board, table, replicates)  # a distance by default
    assert found.marks[(0, "m")] == BEST and (1, "m") not in found.marks


def test_the_floor_band_is_read_from_the_worse_edge():
    board, table, replicates = _board_and_table({"a": 0.5, "b": 0.95})
    floor = {"label": "data", "sampler": "data", "variant": "", "steps": 0, "seeds": 4,
             "nfe_mean": None, "m_mean": 0.9, "m_std": 0.01}
    board = pd.concat([board, pd.DataFrame([floor])], ignore_index=True)
    found = conclude(board, table, replicates, higher_is_better={"m": True})
    assert found.within_floor[(1, "m")] and not found.within_floor[(0, "m")]
    found = conclude(board, table, replicates)
    assert found.within_floor[(0, "m")] and not found.within_floor[(1, "m")]
