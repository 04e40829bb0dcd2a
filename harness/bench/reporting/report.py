"""Results tables and plots, from MLflow runs or from the local JSONL copy.

Both sources become the same list of trial records, each read by the one parser of its
source (`TrialRecord.from_json`, `TrialRecord.from_mlflow_run`) and held as its
`TrialRecord.to_json` dict; then one table with a row per finished trial, then a
leaderboard: per sampler (and grid variant) and step budget, the mean and standard
deviation over seeds of every metric.
`write_report` writes `leaderboard.csv`, `leaderboard.md`, `trials.csv` and the plots
FID vs NFE, the deterministic samplers' ODE error and exact KL vs NFE (log-log) and FID
vs wall-clock; when the rows hold several time schedules, one set of plots per schedule
(`fid_vs_nfe_karras.png`, `fid_vs_nfe_log_snr.png`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Optional

import pandas as pd

from ...core.time_grid import short_label
from ...metrics.bootstrap import DEFAULT_LEVEL
from . import plots
from .comparison import BEST, BUDGET_TOLERANCE, FLOOR_WIDTH, TIED, conclude
from .comparison import replicated_metrics
from .implementations import side_by_side
from ..recording.record import FLOOR_NAME, TrialRecord, finite_number
from ..recording.sinks import FINISHED, read_lines

#: Leaderboard columns first in this order when present; other main values follow.
PRIMARY_METRICS = ("fid", "fd_dinov2", "fid_inf", "kid", "ode_error", "discrete_kl", "nll", "nfe",
                   "network_evals", "wall_clock_s", "overhead_ratio")
#: Per-trial values kept in trials.csv but left out of the Markdown leaderboard.
DETAIL_METRICS = {"nfe_expected", "samples_per_s", "s_per_nfe", "network_s",
                  "peak_memory_mb", "metrics_s", "network_calls"}
KEY_COLUMNS = ["label", "sampler", "variant", "steps"]


def main_metrics(names: Iterable[str], metrics: Iterable[str] = ()) -> list[str]:
    """The headline values among metric names, primary ones first: not runner details,
    and not an extra of another value present (`fid_num_samples` of `fid`, `kid_std`)
    unless named in `metrics`, values of their own (`fid_inf`, not an extra of `fid`)."""
    names = list(dict.fromkeys(names))
    present, own = set(names), set(metrics)
    main = [n for n in names if n not in DETAIL_METRICS and (n in own or not any(
        n.startswith(f"{other}_") for other in present if other != n))]
    ordered = [m for m in PRIMARY_METRICS if m in main]
    return ordered + sorted(m for m in main if m not in ordered)


# --- sources -------------------------------------------------------------------------------

#: Environment keys shown under the leaderboard (the machine and versions).
ENVIRONMENT_KEYS = ("host", "device", "device_name", "cpu_count", "platform", "torch_threads",
                    "dtype",
                    "version.harness", "version.torch", "version.python", "version.mlflow")


@dataclass
class Results:
    """Trial records (`TrialRecord.to_json` dicts), once-per-suite values (the reference
    NLL) and where they were made."""

    records: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    #: The suite's `rank_across_schedules`: ★ and ≈ compare rows of different schedules.
    rank_across_schedules: bool = False


def records_from_jsonl(path: Path, hashes: Optional[set[str]] = None) -> Results:
    """Trial records (optionally only these config hashes), the latest suite values and
    the environment of the latest invocation, from a local trials.jsonl."""
    out = Results()
    invocations: dict[str, dict[str, Any]] = {}
    for line in read_lines(Path(path)):
        kind = line.get("kind")
        if kind == "trial" and (hashes is None or line.get("config_hash") in hashes):
            out.records.append(TrialRecord.from_json(line).to_json())
        elif kind == "suite_values":
            out.reference = {k: v for k, v in line.get("values", {}).items() if v is not None}
        elif kind == "suite":
            invocations[line.get("invocation", "")] = {
                "ran": line.get("trials", 0) > 0, **line.get("environment", {})}
        elif kind == "suite_end" and line.get("invocation", "") in invocations:
            if line.get("wall_s") is not None:
                invocations[line["invocation"]]["suite_wall_s"] = round(line["wall_s"], 1)
    out.environment = _latest_that_ran(list(invocations.values()))
    return out


def _latest_that_ran(invocations: list[dict[str, Any]]) -> dict[str, Any]:
    """The environment of the last invocation that ran trials (a --resume that found
    nothing left says nothing about where the numbers were made)."""
    ran = [i for i in invocations if i.pop("ran")]
    chosen = ran[-1] if ran else (invocations[-1] if invocations else {})
    return dict(chosen)


def records_from_runs(runs: pd.DataFrame,
                      replicates: Optional[dict[str, dict[str, Any]]] = None) -> Results:
    """Records from `mlflow.search_runs` output (trial runs and suite runs, by tag), with
    the replicates artefact each trial run logged (run id -> its content), where read."""
    out = Results()
    if runs.empty:
        return out
    kinds = _kinds(runs)
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    invocations = []
    for _, row in runs[kinds == "suite"].sort_values("start_time").iterrows():
        # Later suite runs override earlier ones: the latest invocation's values win.
        for col in metric_cols:
            name = col[len("metrics."):]
            if "/" not in name and finite_number(row[col]) is not None:
                out.reference[name] = float(row[col])
        environment = {k: row.get(f"params.{k}") for k in ENVIRONMENT_KEYS
                       if isinstance(row.get(f"params.{k}"), str)}
        if finite_number(row.get("metrics.suite_wall_s")) is not None:
            environment["suite_wall_s"] = round(float(row["metrics.suite_wall_s"]), 1)
        invocations.append({"ran": (finite_number(row.get("metrics.trials_run")) or 0) > 0,
                            **environment})
        out.rank_across_schedules = row.get("params.suite.rank_across_schedules") == "True"
    out.environment = _latest_that_ran(invocations)
    for _, row in runs[kinds == "trial"].iterrows():
        logged = (replicates or {}).get(row.get("run_id"))
        out.records.append(TrialRecord.from_mlflow_run(row, logged).to_json())
    return out


def finished_trial_runs(runs: pd.DataFrame) -> list[str]:
    """The run ids of the FINISHED trial runs among `mlflow.search_runs` output."""
    if runs.empty:
        return []
    return list(runs[(_kinds(runs) == "trial") & (runs["status"] == FINISHED)]["run_id"])


def _kinds(runs: pd.DataFrame) -> pd.Series:
    return runs.get("tags.harness.kind", pd.Series(index=runs.index, dtype=object))


# --- tables --------------------------------------------------------------------------------

def trials_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished trial; for repeated (sampler, variant, steps, seed) the latest.

    Failed trials are left out here (they have no metrics to compare); `failures` lists
    them.
    """
    finished = [r for r in records if r.get("status") == FINISHED]
    # Rows name their schedule when the records hold several (the floor has none).
    several = len({schedule_of(r) for r in finished if not r.get("floor")}) > 1
    rows = []
    for r in finished:
        schedule = schedule_of(r)
        label = row_label(r["sampler"], r.get("variant", ""), schedule if several else "")
        rows.append({"label": label, "sampler": r["sampler"], "variant": r.get("variant", ""),
                     "steps": r["steps"], "seed": r["seed"], "name": r.get("name"),
                     "config_hash": r.get("config_hash"), "ended": r.get("ended", 0.0),
                     "num_samples": r.get("num_samples"),
                     "guidance": finite_number(r.get("guidance")), "schedule": schedule,
                     **{k: v for k, v in r.get("metrics", {}).items() if v is not None}})
    if not rows:
        return pd.DataFrame(columns=KEY_COLUMNS + ["seed"])
    table = pd.DataFrame(rows).sort_values("ended")
    keys = ["sampler", "variant", "schedule", "steps", "seed"]
    table = table.drop_duplicates(subset=keys, keep="last")
    return table.sort_values(keys).reset_index(drop=True)


def row_label(sampler: str, variant: str = "", schedule: str = "") -> str:
    """A row's name in tables and legends: `heun`, `langevin (S_churn=10)`, and with a
    schedule `heun (log_snr)` (its short label)."""
    shown = [variant] if variant else []
    shown += [short_label(schedule)] if schedule else []
    return sampler + (f" ({', '.join(shown)})" if shown else "")


def schedule_of(record: dict[str, Any]) -> str:
    """A trial record's schedule label: MLflow's `schedule` param, or the one in the
    recorded configuration; "" for the real-data floor."""
    value = record.get("schedule")
    if not isinstance(value, str) or not value:
        value = (record.get("config") or {}).get("schedule")
    return value if isinstance(value, str) else ""


def replicates_of(records: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """Config hash -> the bootstrap replicates of each set metric, of finished trials."""
    return {r["config_hash"]: r["replicates"] for r in records
            if r.get("status") == FINISHED and r.get("replicates")}


def directions_of(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Replicated metrics whose larger values are better, as their trials recorded it."""
    out: dict[str, bool] = {}
    for r in records:
        out.update(r.get("replicate_higher_is_better") or {})
    return out


def minimums_of(records: list[dict[str, Any]]) -> dict[str, float]:
    """The least value each replicated metric can take, as its trials recorded it."""
    out: dict[str, float] = {}
    for r in records:
        out.update(r.get("replicate_minimums") or {})
    return out


def failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed trials that no later run of the same configuration has made good."""
    finished = {r.get("config_hash") for r in records if r.get("status") == FINISHED}
    return [r for r in records
            if r.get("status") != FINISHED and r.get("config_hash") not in finished]


def unreported(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(trial, metric, reason) for each metric a finished trial has no value of, with
    the reason the metric logged as its `<metric>_status` parameter."""
    out = []
    for r in records:
        if r.get("status") != FINISHED:
            continue
        for key, reason in sorted((r.get("measured_params") or {}).items()):
            metric = key[:-len("_status")] if key.endswith("_status") else None
            if metric and reason != "ok" and metric not in (r.get("metrics") or {}):
                out.append((str(r.get("name")), metric, str(reason)))
    return out


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The numeric per-trial values to aggregate over seeds. A trial's own bootstrap
    interval is left out: a row's interval is made from the replicates of all its seeds
    (`harness.bench.reporting.comparison`), not by averaging the bounds."""
    skip = set(KEY_COLUMNS) | {"seed", "name", "config_hash", "ended", "num_samples",
                               "guidance", "schedule"}
    numeric = [c for c in table.columns
               if c not in skip and pd.api.types.is_numeric_dtype(table[c])
               and not c.endswith(("_ci_low", "_ci_high"))]
    ordered = [m for m in PRIMARY_METRICS if m in numeric]
    return ordered + sorted(c for c in numeric if c not in ordered)


def leaderboard(table: pd.DataFrame) -> pd.DataFrame:
    """Per (sampler, variant, steps): seeds, and mean and std over seeds of every metric."""
    columns = metric_columns(table)
    if table.empty:
        return pd.DataFrame(columns=KEY_COLUMNS + ["seeds"])
    groups = table.groupby(KEY_COLUMNS, sort=True, dropna=False)
    board = groups.size().rename("seeds").to_frame()
    if "guidance" in table:  # constant within a row (the variant names it)
        board["guidance"] = groups["guidance"].first()
    if "schedule" in table:  # constant within a row (a label of several names it)
        board["schedule"] = groups["schedule"].first()
    for col in columns:
        board[f"{col}_mean"] = groups[col].mean()
        # ddof=1: the spread between seeds; a single seed has no spread (NaN).
        board[f"{col}_std"] = groups[col].std(ddof=1)
    board = board.reset_index()
    order = "nfe_mean" if "nfe_mean" in board else "steps"
    board["is_floor"] = board["sampler"] == FLOOR_NAME
    board = board.sort_values(["is_floor", "sampler", "variant", order],
                              ascending=[False, True, True, True])
    return board.drop(columns="is_floor").reset_index(drop=True)


def annotate(board: pd.DataFrame, table: pd.DataFrame,
             replicates: dict[str, dict[str, list]],
             minimums: Optional[dict[str, float]] = None,
             higher_is_better: Optional[dict[str, bool]] = None,
             rank_across_schedules: bool = False) -> pd.DataFrame:
    """The leaderboard with, per set metric m, `m_ci_low`/`m_ci_high` (over samples, the
    reference set and seeds), `m_mark` (best / tied with the best at its budget),
    `m_within_floor`, `m_higher_is_better`, `m_reference_share` (the reference set's
    share of the interval's first-order variance) and, on the floor row,
    `m_band_low`/`m_band_high` (the band the floor flag is judged against, clipped at the
    least value m can take); and `nfe_mismatch` where the counted NFE is not what the
    sampler declared. Rows of different schedules share no budget unless
    `rank_across_schedules`."""
    board = board.copy()
    found = conclude(board, table, replicates, minimums=minimums,
                     higher_is_better=higher_is_better,
                     rank_across_schedules=rank_across_schedules)
    for metric in replicated_metrics(replicates):
        board[f"{metric}_ci_low"] = [found.intervals.get((i, metric), (math.nan,))[0]
                                     for i in board.index]
        board[f"{metric}_ci_high"] = [found.intervals.get((i, metric), (0, math.nan))[1]
                                      for i in board.index]
        board[f"{metric}_mark"] = [found.marks.get((i, metric), "") for i in board.index]
        board[f"{metric}_within_floor"] = [found.within_floor.get((i, metric), False)
                                           for i in board.index]
        # Which edge of the floor band the ◦ marks are judged against.
        board[f"{metric}_higher_is_better"] = bool((higher_is_better or {}).get(metric))
        board[f"{metric}_reference_share"] = [
            found.reference_share.get((i, metric), math.nan) for i in board.index]
        if metric in found.floor_band:
            low, high = found.floor_band[metric]
            least = (minimums or {}).get(metric)
            low = low if least is None else max(low, least)
            on_floor = board["sampler"] == FLOOR_NAME
            board[f"{metric}_band_low"] = [low if f else math.nan for f in on_floor]
            board[f"{metric}_band_high"] = [high if f else math.nan for f in on_floor]
    if "nfe_mean" in board and "nfe_expected_mean" in board:
        board["nfe_mismatch"] = (board["nfe_mean"] - board["nfe_expected_mean"]).abs() > 1e-9
    board["budget"] = [found.budgets.get(i, -1) for i in board.index]
    return board


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(mean: Any, std: Any) -> str:
    """`mean ± std` to 4 significant digits; the std is left out for a single seed."""
    if _missing(mean):
        return ""
    text = f"{mean:.4g}"
    if not _missing(std):
        text += f" ± {std:.2g}"
    return text


#: A Monte-Carlo value within this many of its standard errors of 0 is marked.
NOISE_SE = 2.0


def _estimate_cell(row: Any, metric: str) -> str:
    """A value with its own Monte-Carlo standard error (`<metric>_stderr`: exact KL,
    NLL, ODE error): `value (se s)` for a single seed, `mean ± std` over several; then
    † when the mean is within `NOISE_SE` standard errors of 0 (the se of a mean over S
    seeds is the seeds' mean se / sqrt(S))."""
    mean, se = row[f"{metric}_mean"], row.get(f"{metric}_stderr_mean")
    if _missing(mean) or _missing(se):
        return _cell(mean, row.get(f"{metric}_std"))
    seeds = int(row["seeds"])
    text = f"{mean:.4g} (se {se:.2g})" if seeds == 1 else _cell(mean, row[f"{metric}_std"])
    if abs(mean) < NOISE_SE * se / math.sqrt(seeds):
        text += " †"
    return text


def _set_cell(row: Any, metric: str) -> str:
    """`mean [low, high]` (the bootstrap interval), then the row's marks; on the floor
    row, then the worse edge of its band, which the ◦ marks are judged against."""
    mean = row[f"{metric}_mean"]
    low, high = (row.get(f"{metric}_{bound}", math.nan) for bound in ("ci_low", "ci_high"))
    if _missing(mean):
        return ""
    text = f"{mean:.4g}" if _missing(low) else f"{mean:.4g} [{low:.3g}, {high:.3g}]"
    if row["sampler"] == FLOOR_NAME:
        higher = bool(row.get(f"{metric}_higher_is_better", False))
        edge = row.get(f"{metric}_band_{'low' if higher else 'high'}", math.nan)
        if not _missing(edge):
            text += f", band {'≥' if higher else '≤'} {edge:.3g}"
    text += {BEST: " ★", TIED: " ≈"}.get(row.get(f"{metric}_mark", ""), "")
    if row.get(f"{metric}_within_floor", False):
        text += " ◦"
    return text


def _set_metrics(board: pd.DataFrame) -> list[str]:
    """The metrics with intervals (bootstrap replicates) on this board."""
    return [c[:-len("_ci_low")] for c in board.columns if c.endswith("_ci_low")]


def markdown(board: pd.DataFrame) -> str:
    """The leaderboard as Markdown: set metrics as `mean [interval]` with marks, other
    values as `mean ± std` over seeds (main metrics only; with their own standard error
    where they have one), then what the marks mean."""
    names = (c[:-len("_mean")] for c in board.columns if c.endswith("_mean"))
    metrics = main_metrics(names, _set_metrics(board))
    header = ["sampler", "steps", "seeds"] + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in board.iterrows():
        steps = "–" if row["sampler"] == FLOOR_NAME else str(int(row["steps"]))
        cells = [row["label"], steps, str(int(row["seeds"]))]
        for m in metrics:
            if f"{m}_ci_low" in board:
                cells.append(_set_cell(row, m))
            elif m == "nfe" and row.get("nfe_mismatch", False):
                cells.append(_cell(row["nfe_mean"], row.get("nfe_std"))
                             + f" (declared {row['nfe_expected_mean']:g}) !")
            else:
                cells.append(_estimate_cell(row, m))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + _legend(board)


def _legend(board: pd.DataFrame) -> str:
    return "".join(f"\n{note}\n" for note in footnote(board))


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def footnote(board: pd.DataFrame, level: float = DEFAULT_LEVEL) -> list[str]:
    """What the leaderboard's brackets and marks mean, one note per kind present, in the
    words the README quotes (`tests/test_leaderboard_text.py` holds them together)."""
    notes = []
    level_text, z = _percent(level), NormalDist().inv_cdf((1 + level) / 2)
    if any(c.endswith("_ci_low") for c in board.columns):
        notes.append(
            f"`a [lo, hi]`: the mean over seeds and its {level_text} interval from "
            f"bootstrap resamples of the samples and of the reference set (each "
            f"replicate averaged over the seeds). A distance's (FID, FID_inf, KID) "
            f"reaches a + {z:.2f} se above and less far below, where the variance falls "
            f"towards its value at a distance of 0. For FID it covers the expected FID "
            f"at this N against this reference, for FID_inf and KID the distance itself, "
            f"and it never lies below 0 (a negative estimate reads as 0). Other set "
            f"metrics: a ± {z:.2f} se. ★ the best row at its NFE budget and guidance "
            f"scale: the lowest value, or the highest for a metric where higher is better "
            f"(precision, class accuracy); one budget holds the rows whose counted NFE is "
            f"within {_percent(BUDGET_TOLERANCE)} plus one evaluation of the smallest. ≈ "
            f"tied with the best: the {level_text} interval of the paired-bootstrap "
            f"difference, ± {z:.2f} se (the same initial noise per sample index and the "
            f"same reference resamples, over the seeds both have), contains 0.")
    if "kid_ci_low" in board:
        notes.append(
            "KID is ranked by its value like the other distances, negative values "
            "included. Its estimator is unbiased: at small N it scatters around the true "
            "squared distance, which is >= 0, so a negative KID is not better than 0, and "
            "its interval, which holds the reference set's sampling error too, never lies "
            "wholly below 0.")
    notes.append(f"`a ± s`: the mean and standard deviation over seeds (over draws on the "
                 f"`{FLOOR_NAME}` row); a single seed shows its value alone.")
    if _estimated(board):
        notes.append(
            f"`a (se s)`: a single seed's Monte-Carlo estimate (exact KL, NLL, ODE error) "
            f"with its own standard error over the points it averages. † the value is "
            f"within {NOISE_SE:g} standard errors of 0 (of the mean over seeds): inside "
            f"its own noise, neither its size nor its sign is measured.")
    shares = _reference_shares(board)
    if shares:
        notes.append(
            "Which sampling error the intervals reflect: the reference set's share of "
            "their first-order variance (the rest is the samples', over the seeds) is "
            + "; ".join(shares) + ". Where the reference dominates, more samples narrow "
            "an interval little; a larger reference set would.")
    if (board["sampler"] == FLOOR_NAME).any():
        notes.append(
            f"`{FLOOR_NAME}`: the same metrics on held-out real data of the same size, "
            f"over several draws, with their interval as on any row; its band, the "
            f"mean ± {FLOOR_WIDTH:g} sd of the draws' values, is shown by its worse "
            f"edge. ◦ a sampler row whose mean is no worse than the band's worse edge (at "
            f"or below its top for a distance, at or above its bottom where higher is "
            f"better): at this N and by this metric it is not worse than real data.")
    schedules = _schedules_ranked(board)
    if schedules is not None:
        apart, together = ("together", "rows of every schedule") if schedules else (
            "apart", "rows of one schedule only")
        notes.append(f"Time schedules are ranked {apart}: a budget's ★ and ≈ compare "
                     f"{together} (suite field `rank_across_schedules`).")
    if "nfe_mismatch" in board and board["nfe_mismatch"].any():
        notes.append("`!`: the counted NFE per sample differs from what the sampler "
                     "declares; its budget and name came from the declaration.")
    return notes


def _estimated(board: pd.DataFrame) -> bool:
    """Whether a shown value carries its own standard error (`_estimate_cell`)."""
    return any(f"{m}_stderr_mean" in board and f"{m}_ci_low" not in board
               for m in main_metrics(c[:-len("_mean")] for c in board.columns
                                     if c.endswith("_mean")))


def _reference_shares(board: pd.DataFrame) -> list[str]:
    """`fid 55-70 % (the reference dominates)` per set metric with shares, over the
    sampler rows."""
    out = []
    rows = board[board["sampler"] != FLOOR_NAME]
    for metric in _set_metrics(board):
        column = f"{metric}_reference_share"
        shares = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        if shares.empty:
            continue
        low, high = 100 * shares.min(), 100 * shares.max()
        span = f"{low:.0f} %" if round(low) == round(high) else f"{low:.0f}-{high:.0f} %"
        verdict = ("the reference dominates" if low > 50 else "the samples dominate"
                   if high < 50 else "either, by row")
        out.append(f"{metric} {span} ({verdict})")
    return out


def _schedules_ranked(board: pd.DataFrame) -> Optional[bool]:
    """None when the sampler rows hold one schedule; else whether some budget holds rows
    of several (ranked together) or none does (ranked apart)."""
    if "schedule" not in board or "budget" not in board:
        return None
    rows = board[(board["sampler"] != FLOOR_NAME) & (board["budget"] >= 0)]
    if rows["schedule"].nunique() < 2:
        return None
    return bool((rows.groupby("budget")["schedule"].nunique() > 1).any())


# --- files ---------------------------------------------------------------------------------

@dataclass
class WrittenReport:
    """The files a report wrote (name -> path), and each main metric's mean and std over
    seeds per sampler as (`fid/heun`, value, NFE) points, for charts against NFE."""

    files: dict[str, Path]
    series: list[tuple[str, float, int]]


def write_report(results: Results, out_dir: Path, title: str = "") -> WrittenReport:
    """Write the tables and plots of these results into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = trials_table(results.records)
    board = annotate(leaderboard(table), table, replicates_of(results.records),
                     minimums_of(results.records), directions_of(results.records),
                     results.rank_across_schedules)
    reference = dict(results.reference)
    if reference.get("nll") is None and "nll" in table and table["nll"].notna().any():
        # The model's NLL logged with every trial (not once per suite): same value.
        reference["nll"] = float(table["nll"].mean())
    files: dict[str, Path] = {}
    files["trials.csv"] = out_dir / "trials.csv"
    table.to_csv(files["trials.csv"], index=False)
    files["leaderboard.csv"] = out_dir / "leaderboard.csv"
    board.to_csv(files["leaderboard.csv"], index=False)
    files["leaderboard.md"] = out_dir / "leaderboard.md"
    files["leaderboard.md"].write_text(_markdown_page(board, results, reference, title))
    parts = schedule_boards(board)
    tags = schedule_file_tags([schedule for schedule in parts if schedule])
    for schedule, part in parts.items():
        # One schedule keeps the plain names (`fid_vs_nfe.png`), several get theirs
        # (`fid_vs_nfe_karras.png`): each plot compares the samplers under one grid.
        shown = ", ".join(p for p in (title, schedule and f"schedule {schedule}") if p)
        files.update(plots.report_plots(
            part, out_dir, title_suffix=f" ({shown})" if shown else "",
            file_tag=tags.get(schedule, ""), budget_tolerance=BUDGET_TOLERANCE))
    return WrittenReport(files, nfe_series(board))


def schedule_boards(board: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The board per time schedule when its sampler rows hold several, each with the
    real-data floor and rows named without their (then common) schedule, in the order
    of the schedules' labels; else `{"": board}`."""
    if "schedule" not in board:
        return {"": board}
    floor = board["sampler"] == FLOOR_NAME
    schedules = sorted(set(board.loc[~floor, "schedule"].dropna()) - {""})
    if len(schedules) < 2:
        return {"": board}
    parts = {}
    for schedule in schedules:
        part = board[floor | (board["schedule"] == schedule)].copy()
        part["label"] = [label if on_floor else row_label(sampler, variant)
                         for label, on_floor, sampler, variant in zip(
                             part["label"], part["sampler"] == FLOOR_NAME,
                             part["sampler"], part["variant"].fillna(""))]
        parts[schedule] = part
    return parts


def schedule_file_tags(schedules: list[str]) -> dict[str, str]:
    """Schedule label -> the suffix of its plots' file names (`_karras`,
    `_karras_rho=5.0`): the short label with what a file name should not hold replaced;
    two labels that would share one are told apart by their order."""
    tags: dict[str, str] = {}
    for schedule in schedules:
        tag = "_" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", short_label(schedule)).strip("_")
        taken = set(tags.values())
        tags[schedule] = tag if tag not in taken else f"{tag}_{len(tags)}"
    return tags


def nfe_series(board: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Per sampler, each main metric's mean (`fid/heun`) and std over seeds
    (`fid_std/heun`) as points at step = NFE."""
    names = main_metrics(c[:-len("_mean")] for c in board.columns if c.endswith("_mean"))
    names = [n for n in names if n != "nfe"]
    points: list[tuple[str, float, int]] = []
    for _, row in board.iterrows():
        nfe = row.get("nfe_mean", row.get("steps"))
        if nfe is None or pd.isna(nfe):
            continue
        for name in names:
            for stat, suffix in (("mean", ""), ("std", "_std")):
                value = row.get(f"{name}_{stat}")
                if value is not None and not pd.isna(value):
                    points.append((f"{name}{suffix}/{row['label']}", float(value),
                                   int(round(nfe))))
    return points


def _markdown_page(board: pd.DataFrame, results: Results, reference: dict[str, float],
                   title: str) -> str:
    """The leaderboard, the reference NLL, failures, and the machine it was made on."""
    parts = [f"# {title}\n\n" if title else "", markdown(board)]
    parts.append(side_by_side(board))
    if reference.get("nll") is not None:
        se = reference.get("nll_stderr")
        parts.append(f"\nReference NLL of the model (adaptive PF-ODE solve, independent of "
                     f"the sampler): {reference['nll']:.4f} bits/dim"
                     + (f" (se {se:.2g})" if se is not None else "") + "\n")
    missing = unreported(results.records)
    if missing:
        parts.append(f"\nValues not reported ({len(missing)}):\n\n")
        parts += [f"- {name}: {metric}: {reason}\n" for name, metric, reason in missing]
    failed = failures(results.records)
    if failed:
        parts.append(f"\nFailed trials ({len(failed)}):\n\n")
        parts += [f"- {r.get('name')}: {r.get('error')}\n" for r in failed]
    if results.environment:
        shown = ", ".join(f"{k} {v}" for k, v in results.environment.items())
        parts.append(f"\nMade on: {shown}\n")
    return "".join(parts)


def report_from_mlflow(tracking_uri: str, experiment: str, out_dir: Path) -> WrittenReport:
    """`harness report`: read every run of the experiment back and write its report."""
    from ..recording.tracking import run_replicates, search_experiment_runs

    runs = search_experiment_runs(tracking_uri, experiment)
    results = records_from_runs(
        runs, run_replicates(tracking_uri, finished_trial_runs(runs)))
    return write_report(results, Path(out_dir) / experiment, title=experiment)
