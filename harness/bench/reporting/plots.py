"""Pictures of results: a trial's samples, and one metric against another per sampler.

matplotlib with the Agg backend (no display needed); every public function writes one
PNG and returns its path, except `draw_metric_by_sampler`, which returns the figure so
that what it shows can be checked on the figure's objects, and `report_plots`, which
writes a report's set. Figures are closed after saving so long suites do not accumulate
them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from torch import Tensor  # noqa: E402

from ...metrics.bootstrap import DEFAULT_LEVEL  # noqa: E402

GRID_IMAGES = 64
#: A value axis becomes logarithmic when its positive values span more than this factor.
LOG_SPAN = 10.0
#: The factor between neighbouring samplers' x positions when points are dodged, and the
#: largest shift of any (many samplers share the span, so as not to misplace them).
DODGE, DODGE_MAX = 1.025, 1.08


def sample_grid(samples: Tensor, value_range: tuple[float, float], path: Path,
                title: str = "") -> Path:
    """Images as a square grid (first 64); 2-D points (or the first two coordinates of
    other flat data) as a scatter plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if samples.ndim == 4:
        figure = _image_grid(samples[:GRID_IMAGES], value_range)
    else:
        figure = _scatter(samples.flatten(1))
    if title:
        figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _image_grid(images: Tensor, value_range: tuple[float, float]) -> Any:
    n = images.shape[0]
    side = max(1, math.ceil(math.sqrt(n)))
    lo, hi = value_range
    # Clamp so that out-of-range samples show as saturated rather than rescaling the grid.
    images = images.clamp(lo, hi)
    c, h, w = images.shape[1:]
    canvas = torch.full((c, side * (h + 1) + 1, side * (w + 1) + 1), lo)
    for k in range(n):
        row, col = divmod(k, side)
        top, left = 1 + row * (h + 1), 1 + col * (w + 1)
        canvas[:, top:top + h, left:left + w] = images[k]
    figure, axis = plt.subplots(figsize=(4, 4))
    picture = canvas[0] if c == 1 else canvas.permute(1, 2, 0)
    axis.imshow(picture.numpy(), cmap="gray" if c == 1 else None, vmin=lo, vmax=hi,
                interpolation="nearest")
    axis.set_axis_off()
    return figure


def _scatter(points: Tensor) -> Any:
    figure, axis = plt.subplots(figsize=(4, 4))
    y = points[:, 1] if points.shape[1] > 1 else torch.zeros(points.shape[0])
    axis.scatter(points[:, 0].numpy(), y.numpy(), s=3, alpha=0.5)
    axis.set_aspect("equal", adjustable="datalim")
    axis.set_xlabel("x[0]")
    axis.set_ylabel("x[1]" if points.shape[1] > 1 else "")
    return figure


def metric_by_sampler(table: pd.DataFrame, x: str, y: str, path: Path, **options: Any
                      ) -> Optional[Path]:
    """`draw_metric_by_sampler` written to `path`; None (nothing written) when no row has
    a value for `y`."""
    figure = draw_metric_by_sampler(table, x, y, **options)
    return None if figure is None else _save(figure, path)


def draw_metric_by_sampler(table: pd.DataFrame, x: str, y: str, *,
                           x_label: str, y_label: str, title: str,
                           reference: Optional[tuple[float, str]] = None,
                           log_x: bool = False, log_y: Optional[bool] = None,
                           error: Optional[str] = None, floor_width: float = 2.0,
                           dodge: bool = False, level: float = DEFAULT_LEVEL
                           ) -> Optional[Figure]:
    """One line per sampler (variant): mean of `y` over seeds with error bars.

    `table` has one row per (label, steps) with columns `label`, `{x}_mean`, `{y}_mean`
    and the error: `{y}_ci_low`/`{y}_ci_high` (a bootstrap interval at `level`) when
    present, else the column `error`, by default `{y}_std` (the spread over seeds); the
    legend's title says which. `reference` = (value, label) draws a horizontal line; rows
    of the real-data floor (sampler "data", no NFE) draw their band, mean +-
    `floor_width` std, across the plot. `log_y`: None chooses a log axis when the means
    are positive and span more than a factor `LOG_SPAN`; with a log axis, rows whose
    mean is not positive cannot be drawn and are left out (a KL estimate within its
    Monte-Carlo error of 0 can be). `dodge`: shift each sampler's points sideways by a
    few per cent, so that the bars of samplers at one NFE do not hide each other.
    Returns None when no row has a value for `y`.
    """
    x_col, y_col, err_col = f"{x}_mean", f"{y}_mean", error or f"{y}_std"
    if x_col not in table or y_col not in table or table[y_col].notna().sum() == 0:
        return None
    low_col, high_col = f"{y}_ci_low", f"{y}_ci_high"
    shown = table.dropna(subset=[x_col, y_col])
    if log_y is None:
        values = shown[y_col]
        log_y = bool(len(values) and (values > 0).all()
                     and values.max() > LOG_SPAN * values.min())
    if log_y:
        shown = shown[shown[y_col] > 0]
        if shown.empty:
            return None
    figure, axis = plt.subplots(figsize=(6, 4))
    labels = sorted(shown["label"].unique())
    step = min(DODGE, DODGE_MAX ** (2 / max(len(labels) - 1, 1))) if dodge else 1.0
    bars: set[str] = set()
    for k, label in enumerate(labels):
        rows = shown[shown["label"] == label].sort_values(x_col)
        if low_col in rows and rows[low_col].notna().any():
            errors = [(rows[y_col] - rows[low_col]).clip(lower=0).fillna(0.0),
                      (rows[high_col] - rows[y_col]).clip(lower=0).fillna(0.0)]
            bars.add(f"{_percent(level)} bootstrap interval")
        elif err_col in rows and rows[err_col].notna().any():
            errors = rows[err_col].fillna(0.0)
            bars.add("mean ± 1 sd over seeds" if err_col == f"{y}_std" else err_col)
        else:
            errors = None
        shift = step ** (k - (len(labels) - 1) / 2)
        # Ten colours, then the same colours with other markers and dashes.
        style = {"marker": "osD^"[k // 10 % 4], "linestyle": ("-", "--")[k // 10 % 2]}
        axis.errorbar(rows[x_col] * shift, rows[y_col], yerr=errors, markersize=4,
                      capsize=2, label=label, **style)
    floor = table[(table["sampler"] == "data") & table[y_col].notna()] \
        if "sampler" in table else table.iloc[0:0]
    band: list[float] = []
    if not floor.empty:
        mean = float(floor[y_col].iloc[0])
        std = floor.get(f"{y}_std", pd.Series([0.0])).fillna(0.0).iloc[0]
        band = [mean - floor_width * std, mean, mean + floor_width * std]
        axis.axhspan(band[0], band[2], color="grey", alpha=0.25,
                     label=f"real data at this N (mean ± {floor_width:g} sd over draws)")
        axis.axhline(mean, color="grey", linewidth=1)
    if reference is not None and reference[0] is not None and math.isfinite(reference[0]):
        axis.axhline(reference[0], color="black", linestyle="--", linewidth=1,
                     label=reference[1])
    if log_x:
        axis.set_xscale("log")
    if log_y:
        axis.set_yscale("log")
        axis.set_ylim(*_log_limits(shown, [y_col, low_col, high_col], band))
    for ticks, logarithmic in ((axis.xaxis, log_x), (axis.yaxis, log_y)):
        if logarithmic:
            readable_log_ticks(ticks)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.set_title(title, fontsize=10)
    axis.grid(True, alpha=0.3)
    notes = [f"bars: {kind}" for kind in sorted(bars)]
    if dodge and len(labels) > 1:
        spread = (step ** ((len(labels) - 1) / 2) - 1) * 100
        notes.append(f"x shifted up to ±{spread:.2g} % per sampler")
    # Beside the axes: inside, it hides whichever line runs through its corner.
    axis.legend(fontsize=7, title="\n".join(notes) or None, title_fontsize=7,
                loc="upper left", bbox_to_anchor=(1.01, 1.0), alignment="left")
    return figure


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def _log_limits(shown: pd.DataFrame, columns: list[str], extra: list[float]
                ) -> tuple[float, float]:
    """A log axis around the positive values of these columns and `extra` (the floor
    band): a lower bound at or below 0 runs off the bottom rather than stretching the
    axis over decades of nothing."""
    points = pd.concat([shown[c] for c in columns if c in shown] + [pd.Series(extra)])
    points = points.dropna()
    points = points[points > 0]
    return float(points.min()) / 1.25, float(points.max()) * 1.25


def readable_log_ticks(ticks: Any) -> None:
    """Plain decimal labels (20, 0.05) at 1-2-5 steps of a log axis (finer on a short
    one, only powers of 10 on a long one), and unlabelled minor ticks: the default
    labels every minor tick of a short range (`3x10^0`, `4x10^0`) until they overlap."""
    low, high = sorted(ticks.get_view_interval())
    decades = math.log10(high / low) if low > 0 else math.inf
    if decades < 0.5:  # every integer multiple, or a label or none at all
        steps: tuple[float, ...] = tuple(float(k) for k in range(1, 10))
    else:
        steps = (1.0, 2.0, 3.0, 5.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 3 \
            else (1.0,)
    ticks.set_major_locator(LogLocator(base=10, subs=steps))
    ticks.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ticks.set_minor_formatter(NullFormatter())


def guidance_tradeoff(board: pd.DataFrame, x: str, y: str, path: Path, *,
                      x_label: str, y_label: str, title: str) -> Optional[Path]:
    """The guidance trade-off: one panel per sampler, one line per step count through
    the guidance scales (each point labelled with its w), `y` against `x` (e.g. FID
    against class accuracy). Returns None when the board has no guided rows with both."""
    x_col, y_col = f"{x}_mean", f"{y}_mean"
    if "guidance" not in board or x_col not in board or y_col not in board:
        return None
    shown = board.dropna(subset=["guidance", x_col, y_col])
    if shown.empty:
        return None
    samplers = sorted(shown["sampler"].unique())
    columns = min(3, len(samplers))
    rows_n = -(-len(samplers) // columns)
    figure, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 3.4 * rows_n),
                                squeeze=False, sharex=True, sharey=True)
    log_y = bool((shown[y_col] > 0).all())  # FID spans decades between budgets
    for axis, sampler in zip(axes.flat, samplers):
        of_sampler = shown[shown["sampler"] == sampler]
        for steps, line in of_sampler.groupby("steps", sort=True):
            line = line.sort_values("guidance")
            nfe = line["nfe_mean"].iloc[0] if "nfe_mean" in line else steps
            axis.plot(line[x_col], line[y_col], marker="o", markersize=4,
                      label=f"{nfe:g} NFE")
            for _, point in line.iterrows():
                axis.annotate(f"w={point['guidance']:g}", (point[x_col], point[y_col]),
                              fontsize=6, xytext=(3, 3), textcoords="offset points")
        axis.set_title(sampler, fontsize=9)
        axis.grid(True, alpha=0.3, which="both")
        axis.legend(fontsize=6)
        if log_y:
            axis.set_yscale("log")
    for axis in axes.flat[len(samplers):]:
        axis.set_visible(False)
    if log_y:
        readable_log_ticks(axes.flat[0].yaxis)
    for axis in axes[-1]:
        axis.set_xlabel(x_label)
    for axis in axes[:, 0]:
        axis.set_ylabel(y_label)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def metric_vs_guidance(board: pd.DataFrame, y: str, path: Path, *, y_label: str,
                       title: str, budget_tolerance: float = 0.10,
                       log_y: bool = True) -> Optional[Path]:
    """Which sampler degrades first as guidance grows: one panel per NFE budget (counted
    NFE within `budget_tolerance` plus one evaluation), one line per sampler, `y`
    against the guidance scale w. Returns None when no guided row has `y`."""
    y_col = f"{y}_mean"
    if "guidance" not in board or y_col not in board or "nfe_mean" not in board:
        return None
    shown = board.dropna(subset=["guidance", y_col, "nfe_mean"])
    if log_y:
        shown = shown[shown[y_col] > 0]
    if shown.empty:
        return None
    budgets: list[list[float]] = []
    for nfe in sorted(shown["nfe_mean"].unique()):
        if budgets and nfe <= budgets[-1][0] * (1 + budget_tolerance) + 1:
            budgets[-1].append(nfe)
        else:
            budgets.append([nfe])
    figure, axes = plt.subplots(1, len(budgets), figsize=(4.6 * len(budgets), 3.6),
                                squeeze=False, sharey=True)
    for axis, members in zip(axes[0], budgets):
        rows = shown[shown["nfe_mean"].isin(members)]
        for label, line in rows.groupby("sampler", sort=True):
            line = line.sort_values("guidance")
            axis.plot(line["guidance"], line[y_col], marker="o", markersize=4, label=label)
        low, high = min(members), max(members)
        axis.set_title(f"{low:g} NFE" if low == high else f"{low:g}-{high:g} NFE",
                       fontsize=9)
        axis.set_xscale("symlog", linthresh=1.0)
        scales = sorted(rows["guidance"].unique())
        axis.set_xticks(scales, [f"{w:g}" for w in scales])
        axis.set_xlabel("guidance scale w")
        if log_y:
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3, which="both")
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel(y_label)
    if log_y:
        readable_log_ticks(axes[0][0].yaxis)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def report_plots(board: pd.DataFrame, out_dir: Path, *, title_suffix: str = "",
                 file_tag: str = "", budget_tolerance: float = 0.10) -> dict[str, Path]:
    """A report's plots of one leaderboard (`harness.bench.reporting.report`): each metric against
    NFE, FID against wall-clock and, under guidance, against class accuracy and w; each
    drawn when the board has its values. Files `<name><file_tag>.png` (`fid_vs_nfe.png`,
    with a tag `fid_vs_nfe_karras.png`), titles ending in `title_suffix`; returns file
    name -> path of those written."""
    out_dir = Path(out_dir)

    def path(name: str) -> Path:
        return out_dir / f"{name}{file_tag}.png"

    suffix, nfe = title_suffix, "NFE per sample"
    drawn = [
        metric_by_sampler(board, "nfe", "fid", path("fid_vs_nfe"), x_label=nfe,
                          y_label="FID", title=f"FID vs NFE{suffix}", log_x=True,
                          dodge=True),
        metric_by_sampler(board, "nfe", "kid", path("kid_vs_nfe"), x_label=nfe,
                          y_label="KID", title=f"KID vs NFE{suffix}", log_x=True,
                          dodge=True),
        metric_by_sampler(board, "nfe", "ode_error", path("ode_error_vs_nfe"), x_label=nfe,
                          y_label="RMS distance per dimension to the exact ODE",
                          title=f"ODE discretisation error vs NFE (deterministic "
                                f"samplers){suffix}", log_x=True, dodge=True, log_y=True),
        metric_by_sampler(board, "nfe", "discrete_kl", path("discrete_kl_vs_nfe"),
                          x_label=nfe, y_label="KL(q_N || p) (bits/dim)",
                          title=f"Exact KL of the sampler's distribution vs NFE{suffix}",
                          log_x=True, dodge=True, log_y=True),
        metric_by_sampler(board, "wall_clock_s", "fid", path("fid_vs_wallclock"),
                          x_label="wall-clock per trial (s)", y_label="FID",
                          title=f"FID vs wall-clock{suffix}", log_x=True),
        guidance_tradeoff(board, "class_accuracy", "fid", path("fid_vs_accuracy"),
                          x_label="class accuracy (shipped classifier)", y_label="FID",
                          title=f"Guidance trade-off: FID vs class accuracy as w "
                                f"grows{suffix}"),
        metric_vs_guidance(board, "fid", path("fid_vs_guidance"), y_label="FID",
                           title=f"FID vs guidance scale, per NFE budget{suffix}",
                           budget_tolerance=budget_tolerance),
    ]
    return {written.name: written for written in drawn if written is not None}


def _save(figure: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
