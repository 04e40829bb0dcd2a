"""The leaderboard page shows one method's implementations next to each other."""

from __future__ import annotations

import math

import pandas as pd

from harness.bench.reporting.implementations import METHODS, Method, side_by_side

NAN = math.nan


def board(rows):
    columns = ["label", "sampler", "variant", "steps", "nfe_mean", "fid_mean", "fid_ci_low",
               "fid_ci_high", "fid_mark"]
    return pd.DataFrame([dict(zip(columns, row)) for row in rows])


def test_each_method_of_two_libraries_gets_its_rows_ordered_by_counted_nfe():
    page = side_by_side(board([
        ("data", "data", "", 0, NAN, 8.0, 7.0, 9.0, ""),
        ("dpmpp_2m", "dpmpp_2m", "", 10, 10.0, 10.1, 7.0, 13.2, "tied"),
        ("dpmpp_2m", "dpmpp_2m", "", 6, 6.0, 17.3, 14.0, 20.6, "best"),
        ("kdiffusion:dpmpp_2m", "kdiffusion:dpmpp_2m", "", 6, 6.0, 17.31, 14.0, 20.6, ""),
        ("diffusers:DPMSolverMultistepScheduler", "diffusers:DPMSolverMultistepScheduler",
         "", 6, 6.0, 25.0, 21.0, 29.0, ""),
        ("heun", "heun", "", 5, 9.0, 34.3, 30.0, 38.0, ""),  # one library only: no section
    ]))
    assert "## Same method, different implementations" in page
    assert "### DPM-Solver++(2M)" in page and "### Heun" not in page
    rows = [line for line in page.splitlines() if line.startswith("| 6") or
            line.startswith("| 10")]
    assert rows == [
        "| 6 | `dpmpp_2m` | 6 | 17.3 [14, 20.6] ★ |",
        "| 6 | `kdiffusion:dpmpp_2m` | 6 | 17.31 [14, 20.6] |",
        "| 6 | `diffusers:DPMSolverMultistepScheduler` | 6 | 25 [21, 29] |",
        "| 10 | `dpmpp_2m` | 10 | 10.1 [7, 13.2] ≈ |",
    ]
    method = next(m for m in METHODS if m.name == "DPM-Solver++(2M)")
    assert method.note in page


def test_two_built_ins_of_one_method_are_no_comparison_of_implementations():
    two_builtins = board([("euler", "euler", "", 6, 6.0, 28.7, 25.0, 32.0, ""),
                          ("ddim", "ddim", "", 6, 6.0, 28.7, 25.0, 32.0, "")])
    assert side_by_side(two_builtins) == ""
    assert side_by_side(board([])) == ""


def test_a_board_without_the_metric_has_no_section():
    rows = board([("euler", "euler", "", 6, 6.0, 1.0, NAN, NAN, ""),
                  ("kdiffusion:euler", "kdiffusion:euler", "", 6, 6.0, 1.0, NAN, NAN, "")])
    assert "| 6 | `euler` | 6 | 1 |" in side_by_side(rows)
    assert side_by_side(rows.drop(columns="fid_mean")) == ""
    mine = (Method("mine", ("a", "x:a"), "why they differ"),)
    rows = board([("a", "a", "", 3, 3.0, 2.0, NAN, NAN, ""),
                  ("x:a", "x:a", "", 3, 3.0, 2.5, NAN, NAN, "")])
    assert "why they differ" in side_by_side(rows, methods=mine)
