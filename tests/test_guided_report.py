"""A guided suite through the real command, read back as a researcher reads it: rows per
guidance scale, ★ and ≈ only within a scale, precision ranked highest-first, and the same
conclusions from the MLflow store as from the local trials.jsonl."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.bench_support import bench_environment, harness, write_suite

SUITE = """
experiment = "guided-report"
model = "gmm-cond-2d"
schedule = "karras"
seeds = [0]
num_samples = 150
batch_size = 150
device = "cpu"
guidance = [1.0, 4.0]

[model_options]
sde = "edm"

[samplers.heun]
steps = [4]

[samplers.euler]
steps = [7]

[metrics.fid]
[metrics.precision]
[metrics.class_accuracy]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("guided_report")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for _ in bench_environment(monkeypatch, tmp_path):
            suite = write_suite(tmp_path / "guided.toml", SUITE)
            assert harness("run", suite, "--quiet") == 0
            yield tmp_path / "runs" / "guided-report"


def test_rows_are_per_scale_and_marks_never_cross_scales(run):
    board = pd.read_csv(run / "leaderboard.csv")
    rows = board[board["sampler"] != "data"]
    assert sorted(rows["label"]) == ["euler (w=1)", "euler (w=4)", "heun (w=1)", "heun (w=4)"]
    assert (rows["network_evals_mean"] == rows["nfe_mean"] * rows["guidance"].map(
        {1.0: 1, 4.0: 2})).all()
    for metric, higher in (("fid", False), ("precision", True), ("class_accuracy", True)):
        for scale, group in rows.groupby("guidance"):
            marks = group[f"{metric}_mark"].fillna("")
            # heun at 7 NFE and euler at 7 NFE share a budget: one best per scale.
            assert (marks == "best").sum() == 1, (metric, scale, marks.tolist())
            best = group.loc[marks == "best", f"{metric}_mean"].iloc[0]
            values = group[f"{metric}_mean"]
            assert best == (values.max() if higher else values.min()), (metric, scale)


def test_the_report_from_mlflow_concludes_the_same(run, tmp_path):
    from harness.bench.reporting.report import report_from_mlflow

    uri = f"sqlite:///{run.parent.parent / 'mlflow.db'}"
    again = report_from_mlflow(uri, "guided-report", tmp_path)
    local = pd.read_csv(run / "leaderboard.csv")
    tracked = pd.read_csv(again.files["leaderboard.csv"])
    columns = ["label", "steps", "guidance", "fid_mean", "fid_mark", "precision_mean",
               "precision_mark", "class_accuracy_mark"]
    pd.testing.assert_frame_equal(local[columns], tracked[columns])
    assert (run / "fid_vs_guidance.png").exists() and (run / "fid_vs_accuracy.png").exists()
