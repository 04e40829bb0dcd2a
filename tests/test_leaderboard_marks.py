"""The ◦ and ★ marks on constructed leaderboards whose answers are known by construction.

◦ is one-sided: a sampler row is marked when its mean is no worse than the worse edge of
the real-data band (mean ± 2 sd over the draws), inside the band or beyond its better
edge, and not when it is beyond the worse edge.

KID is ranked by its value, negative values included, and ties are decided by the paired
differences. Replicates here are a shared shift (the same for every row, as the fixed
reference set's error is) plus each row's own small noise: every row's interval is wide
and contains 0, while paired differences are precise. A row close to the best is tied
with it; a row far from it is not, although its interval also contains 0.
"""

from __future__ import annotations

import random

import pandas as pd

from harness.bench.reporting.report import annotate, leaderboard, markdown

REPLICATES = 200


def _table(values: dict[str, list[float]], metric: str) -> pd.DataFrame:
    """One trial per (row, seed); the row "data" is the floor (no NFE)."""
    rows = []
    for name, seeds in values.items():
        for seed, value in enumerate(seeds):
            row = {"sampler": name, "steps": 0 if name == "data" else 10, "seed": seed,
                   metric: value}
            if name != "data":
                row["nfe"] = 10.0
            rows.append(row)
    table = pd.DataFrame(rows)
    table["label"], table["variant"] = table["sampler"], ""
    table["config_hash"] = [f"{r.sampler}-{r.seed}" for r in table.itertuples()]
    return table


def _replicates(table: pd.DataFrame, metric: str, shared_sd: float, own_sd: float
                ) -> dict[str, dict[str, list[float]]]:
    draw = random.Random(7)
    # One shift per replicate and seed, common to every row: what the rows share.
    shared = {s: [draw.gauss(0.0, shared_sd) for _ in range(REPLICATES)]
              for s in table["seed"].unique()}
    return {h: {metric: [v + shared[s][b] + draw.gauss(0.0, own_sd)
                         for b in range(REPLICATES)]}
            for h, s, v in zip(table["config_hash"], table["seed"], table[metric])}


def _marks(board: pd.DataFrame, metric: str) -> dict[str, tuple[str, bool]]:
    rows = board[board["sampler"] != "data"]
    return {r["sampler"]: (r[f"{metric}_mark"], bool(r[f"{metric}_within_floor"]))
            for _, r in rows.iterrows()}


def _annotated(values, metric, higher=False, shared_sd=0.01, own_sd=0.01):
    table = _table(values, metric)
    return annotate(leaderboard(table), table, _replicates(table, metric, shared_sd, own_sd),
                    higher_is_better={metric: higher})


# Real data: mean 10, sd over the four draws 1 (band 8 to 12).
FLOOR = [9.0, 11.0, 9.0, 11.0]
FLOOR_SD = pd.Series(FLOOR).std()


def test_a_distance_inside_the_band_or_below_it_is_marked_and_one_above_it_is_not():
    top = 10.0 + 2 * FLOOR_SD
    values = {"data": FLOOR, "inside": [11.0, 11.0], "below": [6.0, 6.0],
              "above": [top + 0.5, top + 0.5]}
    marks = _marks(_annotated(values, "fid"), "fid")
    assert marks["inside"][1] and marks["below"][1] and not marks["above"][1]
    page = markdown(_annotated(values, "fid"))
    line = {row.split("|")[1].strip(): row for row in page.splitlines() if "|" in row}
    assert "◦" in line["inside"] and "◦" in line["below"] and "◦" not in line["above"]


def test_where_higher_is_better_the_worse_edge_is_the_bottom_of_the_band():
    bottom = 10.0 - 2 * FLOOR_SD
    values = {"data": FLOOR, "inside": [9.0, 9.0], "above": [14.0, 14.0],
              "below": [bottom - 0.5, bottom - 0.5]}
    marks = _marks(_annotated(values, "precision", higher=True), "precision")
    assert marks["inside"][1] and marks["above"][1] and not marks["below"][1]


def test_the_most_negative_kid_is_not_best_alone_over_a_row_it_cannot_be_told_from():
    # Shared shift sd 10 per seed (each row's interval, over two seeds, about +-14: every
    # one contains 0); own noise sd 0.5 per seed (a paired difference known to about +-1).
    values = {"most_negative": [-10.0, -10.0], "close": [-9.5, -9.5],
              "far": [-1.0, -1.0]}
    board = _annotated(values, "kid", shared_sd=10.0, own_sd=0.5)
    rows = board.set_index("sampler")
    assert rows.loc["close", "kid_ci_low"] < 0 < rows.loc["close", "kid_ci_high"]
    assert rows.loc["far", "kid_ci_low"] < 0 < rows.loc["far", "kid_ci_high"]
    marks = _marks(board, "kid")
    assert marks["most_negative"][0] == "best"
    assert marks["close"][0] == "tied"   # 0.5 apart, paired se about 0.5: a tie
    # 9 apart, far beyond the paired error: behind the best, whatever its own interval.
    assert marks["far"][0] == ""
