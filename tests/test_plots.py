"""The metric-against-NFE plots say what they show, checked on the figure objects (never
pixels): a log value axis where the values span decades, plain tick labels, bars named
with their real interval level, and samplers at one NFE drawn side by side."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from harness.bench.reporting.plots import draw_metric_by_sampler, metric_by_sampler

NFE = [10.0, 20.0, 50.0]
FID = {"euler": [14.0, 8.8, 8.2], "heun": [33.0, 10.2, 8.6], "pc": [274.0, 140.0, 23.0]}


def _board(values: dict[str, list[float]], interval: bool = True) -> pd.DataFrame:
    rows = [{"label": "data", "sampler": "data", "nfe_mean": None, "fid_mean": 5.9,
             "fid_std": 1.1}]
    for sampler, series in values.items():
        for nfe, value in zip(NFE, series):
            row = {"label": sampler, "sampler": sampler, "nfe_mean": nfe, "fid_mean": value,
                   "fid_std": 0.1 * abs(value)}
            if interval:
                row.update(fid_ci_low=value - 3.0, fid_ci_high=value + 3.0)
            rows.append(row)
    return pd.DataFrame(rows)


def _draw(board: pd.DataFrame, **options):
    options = {"x_label": "NFE", "y_label": "FID", "title": "t", "log_x": True,
               "dodge": True, **options}
    figure = draw_metric_by_sampler(board, "nfe", "fid", **options)
    assert figure is not None
    return figure, figure.axes[0]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _points(axis) -> dict[str, tuple[list[float], list[float]]]:
    """Label -> (x, y) of each sampler's markers, from its error-bar container."""
    return {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
            for c in axis.containers}


def test_values_spanning_decades_get_a_log_axis_and_a_narrow_range_a_linear_one():
    _, axis = _draw(_board(FID))
    assert axis.get_yscale() == "log"
    _, axis = _draw(_board({"euler": [9.0, 8.5, 8.0], "heun": [12.0, 10.0, 9.0]}))
    assert axis.get_yscale() == "linear"
    # Values below 0 (a KID) cannot go on a log axis.
    _, axis = _draw(_board({"euler": [-10.0, 50.0, 400.0]}))
    assert axis.get_yscale() == "linear"


def test_log_axes_carry_plain_decimal_labels_and_no_minor_labels():
    figure, axis = _draw(_board(FID))
    figure.canvas.draw()
    for ticks in (axis.xaxis, axis.yaxis):
        low, high = sorted(ticks.get_view_interval())
        major = [t.get_text() for t in ticks.get_ticklabels()
                 if low <= t.get_position()[ticks is axis.yaxis] <= high]
        assert len(major) >= 2, major
        assert all(re.fullmatch(r"\d+(\.\d+)?", text) for text in major), major
        assert all(t.get_text() == "" for t in ticks.get_ticklabels(minor=True))


def test_the_legend_names_the_interval_the_bars_show_at_its_level():
    _, axis = _draw(_board(FID))
    title = axis.get_legend().get_title().get_text()
    assert "95 %" in title and "bootstrap interval" in title
    _, axis = _draw(_board(FID), level=0.9)
    assert "90 %" in axis.get_legend().get_title().get_text()
    # Without an interval the bars are the spread over seeds, and say so.
    _, axis = _draw(_board(FID, interval=False))
    title = axis.get_legend().get_title().get_text()
    assert "1 sd over seeds" in title and "%" not in title.split("\n")[0]


def test_samplers_at_one_nfe_are_drawn_apart_by_a_few_per_cent_and_keep_their_values():
    _, axis = _draw(_board(FID))
    points = _points(axis)
    assert sorted(points) == sorted(FID)
    for k, nfe in enumerate(NFE):
        xs = [points[s][0][k] for s in FID]
        assert len(set(xs)) == len(xs), xs
        assert all(abs(x / nfe - 1) <= 0.08 for x in xs), xs
        assert [points[s][1][k] for s in FID] == [FID[s][k] for s in FID]
    _, axis = _draw(_board(FID), dodge=False)
    assert all(_points(axis)[s][0] == NFE for s in FID)


def test_the_plot_is_written_where_asked(tmp_path):
    path = metric_by_sampler(_board(FID), "nfe", "fid", tmp_path / "fid.png", x_label="NFE",
                             y_label="FID", title="t", log_x=True, dodge=True)
    assert path == tmp_path / "fid.png" and path.stat().st_size > 0
