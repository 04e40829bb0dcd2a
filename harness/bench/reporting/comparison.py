"""What the leaderboard concludes: intervals over seeds, ties with the best, the floor.

Built from recorded trials (their values and bootstrap replicates, see
`harness.metrics.bootstrap`), never from anything held in memory during the run, so a
report made later from `trials.jsonl` concludes the same.

* Intervals. A row's set metric (one with replicates: FID, KID, two-sample distances)
  gets an interval around its mean over seeds from its replicates and their linear
  parts averaged over the seeds (`harness.metrics.bootstrap`: both the generated
  samples and the shared reference set are resampled; a distance's interval follows its
  variance from the second-order part at a distance of 0 to the delta method's at the
  estimate, its zero being FID's small-N bias, `fid_bias`, averaged over the seeds).
  Where a metric's quantity cannot be below a least value (0 for FID and KID), the
  interval is cut there and is never wholly below it. Each row also gets the share of
  its first-order variance that comes from the reference set (the rest from its
  samples, over its seeds): where the reference's share dominates, more samples would
  narrow the intervals little.
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
  which favours finding a difference). Rows without common seeds are not compared. The
  difference's interval is the plain one (its replicates' standard deviation): a
  difference is no distance, and the plain interval was measured calibrated.
* Floor. The "data" rows (`harness.bench.running.floor`) are real held-out data at the same N:
  their band is mean +- 2 standard deviations over draws; a sampler row whose mean is no
  worse than the band's worse edge (at or below its top for a distance, at or above its
  bottom for a metric where higher is better) is not worse than real data by this metric
  at this N. One-sided on purpose: a row better than real data (a precision above the
  band, bought with recall) is flagged too, and the metric's own column shows by how much.
* KID is ranked by its value like any distance, negative values included (its unbiased
  estimator scatters around the true value, which is >= 0). The reference set is fixed,
  so its own sampling error shifts every row's KID alike; the paired difference of two
  rows resamples that shared reference the same way for both, which is what ★ and ≈
  are decided by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from ...metrics.bootstrap import (
    DEFAULT_LEVEL,
    LINEAR_SUFFIX,
    interval,
    mean_over_seeds,
    paired_comparison,
    split_recorded,
)
from ..recording.record import FLOOR_NAME

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
    #: The reference set's share of a row's first-order variance, where it was logged.
    reference_share: dict[tuple[int, str], float] = field(default_factory=dict)


def replicated_metrics(replicates: dict[str, dict[str, list]]) -> list[str]:
    """The metrics with replicates (not their stored linear parts)."""
    names: set[str] = set()
    for stored in replicates.values():
        names.update(split_recorded(stored)[0])
    return sorted(names)


def _seed_replicates(hashes: list[str], replicates: dict[str, dict[str, list]],
                     metric: str) -> tuple[Optional[list[float]], Optional[list[float]]]:
    """The replicates of `metric` and their linear parts, each averaged over the trials
    `hashes` (seeds); linear parts None unless every trial has them."""
    def mean(key: str) -> Optional[list[float]]:
        per_seed = [replicates.get(h, {}).get(key) for h in hashes]
        if not per_seed or any(r is None or any(v is None for v in r) for r in per_seed):
            return None
        return mean_over_seeds(per_seed)

    values = mean(metric)
    return values, (mean(metric + LINEAR_SUFFIX) if values is not None else None)


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
            reps, linear = _seed_replicates(list(seeds.values()), replicates, metric)
            mean = board.at[index, f"{metric}_mean"] if f"{metric}_mean" in board else None
            if reps is not None and mean is not None and not pd.isna(mean):
                least = minimums.get(metric)
                out.intervals[(index, metric)] = interval(
                    float(mean), reps, linear, level, least,
                    _zero(table, list(seeds.values()), metric, least))
            share = _reference_share(table, list(seeds.values()), metric)
            if share is not None:
                out.reference_share[(index, metric)] = share
        _floor(board, metric, out, higher.get(metric, False))
        _ties(board, metric, hashes_of, replicates, level, out, higher.get(metric, False))
    return out


def _zero(table: pd.DataFrame, hashes: list[str], metric: str, least: Optional[float]
          ) -> float:
    """A distance's value at a distance of 0 over a row's seeds: its least value plus
    the mean of its logged small-N bias (`<metric>_bias`, FID's), if any."""
    column = f"{metric}_bias"
    bias = (table.loc[table["config_hash"].isin(hashes), column].dropna()
            if column in table else pd.Series(dtype=float))
    return (least or 0.0) + (float(bias.mean()) if not bias.empty else 0.0)


def _reference_share(table: pd.DataFrame, hashes: list[str], metric: str
                     ) -> Optional[float]:
    """se_ref^2 / (se_ref^2 + se_samples^2 / S) over a row's S seeds: the reference
    set's share of the first-order variance of the row's mean (the reference is the same
    for every seed, so its share does not shrink with more seeds)."""
    columns = [f"{metric}_se_samples", f"{metric}_se_reference"]
    if any(c not in table for c in columns):
        return None
    rows = table[table["config_hash"].isin(hashes)][columns].dropna()
    if rows.empty:
        return None
    samples = float((rows[columns[0]] ** 2).mean()) / len(rows)
    reference = float((rows[columns[1]] ** 2).mean())
    total = samples + reference
    return reference / total if total > 0 else None


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
            a = _seed_replicates([hashes_of[other][s] for s in common], replicates, metric)
            b = _seed_replicates([hashes_of[best][s] for s in common], replicates, metric)
            if a[0] is None or b[0] is None:
                continue
            observed = (float(board.at[other, mean_col]) - float(board.at[best, mean_col]))
            comparison = paired_comparison(observed, 0.0, a[0], b[0], level)
            if comparison.tied:
                out.marks[(other, metric)] = TIED


def describe(level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """The conventions behind the marks, for the report's notes."""
    return {"level": level, "budget_tolerance": BUDGET_TOLERANCE,
            "floor_width_sd": FLOOR_WIDTH}
