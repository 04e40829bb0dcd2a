"""What the leaderboard concludes: intervals over seeds, ties with the best, the floor.

Built from recorded trials (their values and bootstrap replicates, see
`harness.metrics.bootstrap`), never from anything held in memory during the run, so a
report made later from `trials.jsonl` concludes the same.

* Intervals. A row's set metric (one with replicates: FID, KID, two-sample distances)
  gets its mean over seeds +- z se, the se from its replicates averaged over the seeds
  (`harness.metrics.bootstrap.normal_interval`).
* Budgets. Samplers are given the step count whose NFE is closest to each budget, so
  rows of one budget differ by an evaluation or two (Heun 2N - 1 = 9, Euler N = 10); a
  row joins the budget of the smallest counted NFE below it when it is within
  `BUDGET_TOLERANCE` of it plus one evaluation (9 and 10 together; 20 and 34 apart).
  Budgets never mix guidance scales, nor time schedules unless the suite says
  `rank_across_schedules = true`: a schedule is part of what a row compares.
* Ties. Within a budget, for each set metric, the row with the best mean is the best
  (the lowest for distances, the highest for precision or accuracy, as each metric's
  `higher_is_better` was recorded); every other row is compared with it by the paired
  bootstrap over the seeds both have (sample i has the same initial noise in both), and
  is tied with the best when the 95 % interval of the difference contains 0 (two-sided,
  no correction for the several rows compared; the best row is chosen from the same data,
  which favours finding a difference). Rows without common seeds are not compared.
* Floor. The "data" rows (`harness.bench.floor`) are real held-out data at the same N:
  their band is mean +- 2 standard deviations over draws; a sampler row whose mean is no
  worse than the band's worse edge (at or below its top for a distance, at or above its
  bottom for a metric where higher is better) is not worse than real data by this metric
  at this N. One-sided on purpose: a row better than real data (a precision above the
  band, bought with recall) is flagged too, and the metric's own column shows by how much.
* KID is ranked by its value like any distance, negative values included. The reference
  set is fixed, so its own sampling error shifts every row's KID alike (real data score
  below 0 against it at small N); a row's interval containing 0 says nothing about
  reaching real data, but the paired difference of two rows cancels the reference's own
  term exactly, which is what ★ and ≈ are decided by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from ..metrics.bootstrap import (
    DEFAULT_LEVEL,
    mean_over_seeds,
    normal_interval,
    paired_comparison,
)
from .floor import FLOOR_NAME

#: Rows whose counted NFE are within this fraction (plus one evaluation) of the smallest
#: form one budget.
BUDGET_TOLERANCE = 0.10
#: The floor band: mean +- this many standard deviations over the floor's draws.
FLOOR_WIDTH = 2.0

BEST, TIED = "best", "tied"


@dataclass
class Conclusions:
    """Per leaderboard row index: interval, mark and floor flag of each set metric."""

    intervals: dict[tuple[int, str], tuple[float, float]]
    marks: dict[tuple[int, str], str]
    within_floor: dict[tuple[int, str], bool]
    floor_band: dict[str, tuple[float, float]]
    budgets: dict[int, int]


def replicated_metrics(replicates: dict[str, dict[str, list]]) -> list[str]:
    names: set[str] = set()
    for values in replicates.values():
        names.update(values)
    return sorted(names)


def _row_replicates(hashes: list[str], replicates: dict[str, dict[str, list]], metric: str
                    ) -> Optional[list[float]]:
    per_seed = [replicates.get(h, {}).get(metric) for h in hashes]
    if not per_seed or any(r is None or any(v is None for v in r) for r in per_seed):
        return None
    return mean_over_seeds(per_seed)


def budgets(board: pd.DataFrame, rank_across_schedules: bool = False) -> dict[int, int]:
    """Row index -> budget number, grouping rows of close counted NFE (floor rows out).

    Rows of different guidance scales never share a budget: they sample different
    distributions, so their distances are not a comparison of samplers. Rows of
    different time schedules share none either, unless `rank_across_schedules`."""
    if "nfe_mean" not in board:
        return {}
    rows = board[(board["sampler"] != FLOOR_NAME) & board["nfe_mean"].notna()]
    scales = (rows["guidance"].fillna(-1.0) if "guidance" in rows
              else pd.Series(-1.0, index=rows.index))
    schedules = (rows["schedule"].fillna("") if "schedule" in rows and
                 not rank_across_schedules else pd.Series("", index=rows.index))
    out: dict[int, int] = {}
    group = -1
    for scale, schedule in sorted(set(zip(scales, schedules))):
        start = None
        chosen = (scales == scale) & (schedules == schedule)
        for index, nfe in rows.loc[chosen, "nfe_mean"].sort_values().items():
            if start is None or nfe > start * (1 + BUDGET_TOLERANCE) + 1:
                group, start = group + 1, nfe
            out[index] = group
    return out


def conclude(board: pd.DataFrame, table: pd.DataFrame,
             replicates: dict[str, dict[str, list]], level: float = DEFAULT_LEVEL,
             minimums: Optional[dict[str, float]] = None,
             higher_is_better: Optional[dict[str, bool]] = None,
             rank_across_schedules: bool = False) -> Conclusions:
    """Intervals, ties and floor flags for the leaderboard `board` built from `table`;
    `minimums`: the least value a metric can take (its interval is clipped there);
    `higher_is_better`: the metrics for which larger is better (others: distances);
    `rank_across_schedules`: rows of different time schedules share budgets."""
    minimums = minimums or {}
    higher = higher_is_better or {}
    metrics = replicated_metrics(replicates)
    keys = ["label", "sampler", "variant", "steps"]
    keys += ["schedule"] if "schedule" in board and "schedule" in table else []
    hashes_of: dict[int, dict[int, str]] = {}
    for index, row in board.iterrows():
        rows = table
        for key in keys:
            rows = rows[rows[key] == row[key]]
        hashes_of[index] = dict(zip(rows["seed"].astype(int), rows["config_hash"]))
    out = Conclusions({}, {}, {}, {}, budgets(board, rank_across_schedules))
    for metric in metrics:
        for index, seeds in hashes_of.items():
            reps = _row_replicates(list(seeds.values()), replicates, metric)
            mean = board.at[index, f"{metric}_mean"] if f"{metric}_mean" in board else None
            if reps is not None and mean is not None and not pd.isna(mean):
                out.intervals[(index, metric)] = normal_interval(
                    float(mean), reps, level, minimum=minimums.get(metric))
        _floor(board, metric, out, higher.get(metric, False))
        _ties(board, metric, hashes_of, replicates, level, out, higher.get(metric, False))
    return out


def _floor(board: pd.DataFrame, metric: str, out: Conclusions, higher: bool) -> None:
    floor = board[board["sampler"] == FLOOR_NAME]
    mean_col, std_col = f"{metric}_mean", f"{metric}_std"
    if floor.empty or mean_col not in board or pd.isna(floor[mean_col].iloc[0]):
        return
    mean = float(floor[mean_col].iloc[0])
    std = float(floor[std_col].iloc[0]) if std_col in floor else math.nan
    std = 0.0 if math.isnan(std) else std
    low, high = mean - FLOOR_WIDTH * std, mean + FLOOR_WIDTH * std
    out.floor_band[metric] = (low, high)
    for index, row in board.iterrows():
        if row["sampler"] != FLOOR_NAME and not pd.isna(row.get(mean_col)):
            value = float(row[mean_col])
            # Not worse than real data: on the better side of the band's worse edge.
            out.within_floor[(index, metric)] = value >= low if higher else value <= high


def _ties(board: pd.DataFrame, metric: str, hashes_of: dict[int, dict[int, str]],
          replicates: dict[str, dict[str, list]], level: float, out: Conclusions,
          higher: bool = False) -> None:
    mean_col = f"{metric}_mean"
    if mean_col not in board:
        return
    groups: dict[int, list[int]] = {}
    for index, group in out.budgets.items():
        if not pd.isna(board.at[index, mean_col]):
            groups.setdefault(group, []).append(index)
    for members in groups.values():
        sign = -1.0 if higher else 1.0
        best = min(members, key=lambda i: sign * float(board.at[i, mean_col]))
        out.marks[(best, metric)] = BEST
        for other in members:
            if other == best:
                continue
            common = sorted(set(hashes_of[best]) & set(hashes_of[other]))
            if not common:
                continue
            a = [replicates.get(hashes_of[other][s], {}).get(metric) for s in common]
            b = [replicates.get(hashes_of[best][s], {}).get(metric) for s in common]
            if any(r is None for r in a + b):
                continue
            observed = (float(board.at[other, mean_col]) - float(board.at[best, mean_col]))
            comparison = paired_comparison(observed, 0.0, mean_over_seeds(a),
                                           mean_over_seeds(b), level)
            if comparison.tied:
                out.marks[(other, metric)] = TIED


def describe(level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """The conventions behind the marks, for the report's notes."""
    return {"level": level, "budget_tolerance": BUDGET_TOLERANCE,
            "floor_width_sd": FLOOR_WIDTH}
