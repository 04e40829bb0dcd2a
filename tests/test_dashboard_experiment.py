"""What the MLflow dashboard shows of a suite, read back from a real SQLite store.

A tiny FID suite on the 2-D ring oracle runs through the real command into a store it
creates; the experiment must then be the only one listed, open in the model-training
view, carry a note saying where the comparison is and the saved view *Trials by FID*;
the trial runs must carry the compared values as columns, and the suite run the
leaderboard as its description, as a table artefact and as the FID-vs-NFE plot. The
expected tag names and values are MLflow's own, written out here, not the harness's
constants.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

from harness.bench.recording.mlflow_view import leaderboard_frame, run_description
from tests.bench_support import (
    bench_environment,
    client_for,
    harness,
    suite_runs,
    trial_runs,
    write_suite,
)

SUITE = """
experiment = "dash"
model = "gmm-ring-2d"
schedule = "karras"
steps = [2, 4]
seeds = [0]
num_samples = 64
batch_size = 64
device = "cpu"

[samplers.euler]
[samplers.heun]

# A small reference set: the KID replicates' kernels grow with it.
[metrics.fid]
num_reference = 500
[metrics.kid]
num_reference = 500
subsets = 4
subset_size = 64
"""
#: For what does not need the comparison itself: one cheap trial.
SMALL_SUITE = """
experiment = "dash"
model = "gmm-ring-2d"
steps = [2]
seeds = [0]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.euler]

[metrics.msn]
"""
URI = "sqlite:///mlflow.db"
NOTE_KEY = "mlflow.note.content"
VIEW_KEY = "mlflow.sharedViewState.harness-trials-by-fid"


@pytest.fixture(scope="module")
def new_store(tmp_path_factory):
    """The suite run once into a store the harness creates: (client, experiment id, its
    URI)."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for _ in bench_environment(monkeypatch, tmp_path, store=False):
            assert harness("run", write_suite(tmp_path / "dash.toml", SUITE), "--quiet") == 0
            uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
            client = client_for(uri)
            yield client, client.get_experiment_by_name("dash").experiment_id, uri


def test_the_experiment_opens_in_the_training_view_with_a_note_and_a_saved_view(new_store):
    client, experiment, _ = new_store
    tags = client.get_experiment(experiment).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    note = tags[NOTE_KEY]
    first = note.splitlines()[0]  # all that MLflow shows until the note is unfolded
    assert "Trials by FID" in first and "Artifacts" in first
    link = (f"(#/experiments/{experiment}/runs?viewStateShareKey=harness-trials-by-fid"
            f"&workflowType=machine_learning)")
    assert link in note
    for column in ("`fid`", "`kid`", "`nfe`", "`sampler`", "`steps`", "leaderboard_table.json",
                   "fid_vs_nfe.png", "*Step* is the NFE"):
        assert column in note
    view = json.loads(tags[VIEW_KEY])
    assert view["name"] == "Trials by FID" and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["searchFilter"] == "tags.`harness.kind` = 'trial'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`fid`", True)
    assert state["selectedColumns"] == ["metrics.`fid`", "metrics.`kid`", "metrics.`nfe`",
                                        "params.`sampler`", "params.`steps`",
                                        "params.`seed`"]


def test_mlflows_empty_default_experiment_of_a_new_store_is_hidden(new_store):
    client, _, uri = new_store
    from mlflow.entities import ViewType

    listed = [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    assert listed == ["dash"]
    default = client.get_experiment("0")  # deleted, not gone: it can be restored
    assert (default.name, default.lifecycle_stage) == ("Default", "deleted")


def test_the_filter_of_the_saved_view_lists_every_trial_with_its_columns(new_store):
    client, experiment, _ = new_store
    state = json.loads(json.loads(client.get_experiment(experiment).tags[VIEW_KEY])["state"])
    runs = client.search_runs([experiment], state["searchFilter"], max_results=100)
    samplers = [r for r in runs if r.data.tags.get("harness.floor") != "true"]
    assert len(samplers) == 4 and len(runs) > 4  # the real-data floor rows are listed too
    for run in samplers:
        assert re.fullmatch(r"(euler|heun)-\d+nfe-seed0", run.info.run_name)
        assert {"sampler", "steps", "seed"} <= set(run.data.params)
        assert {"nfe", "fid", "kid"} <= set(run.data.metrics)
        assert run.data.metrics["nfe"] > 0 and run.data.metrics["fid"] >= 0


def test_the_suite_run_carries_the_leaderboard_as_description_table_and_plot(new_store):
    client, _, uri = new_store
    [suite] = suite_runs(uri, "dash")
    files = {a.path for a in client.list_artifacts(suite.info.run_id)}
    assert {"leaderboard.md", "leaderboard_table.json", "fid_vs_nfe.png"} <= files
    logged = json.loads(suite.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "leaderboard_table.json", "type": "table"} in logged
    with tempfile.TemporaryDirectory() as folder:
        page = Path(client.download_artifacts(suite.info.run_id, "leaderboard.md", folder))
        table = json.loads(Path(client.download_artifacts(
            suite.info.run_id, "leaderboard_table.json", folder)).read_text())
        markdown = page.read_text()
    assert suite.data.tags[NOTE_KEY] == markdown
    # The table MLflow renders holds the leaderboard's rows, cells as the Markdown has them.
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert table["columns"][:4] == ["sampler", "nfe", "fid", "kid"]
    assert len(table["data"]) == len(rows) == 5  # the data row, then 2 samplers x 2
    heun = [row for row in table["data"] if row[0] == "heun"]
    assert [row[1] for row in heun] == ["3", "7"]  # Heun's 2N - 1 NFE at 2 and 4 steps
    assert all(re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\].*", row[2]) for row in heun)
    assert "| heun | " in markdown and f"| {heun[0][2]} |" in markdown


def test_the_suite_runs_charts_put_the_nfe_on_mlflows_step_axis(new_store):
    client, _, uri = new_store
    [suite] = suite_runs(uri, "dash")
    counted = [r.data.metrics["nfe"] for r in trial_runs(uri, "dash")
               if r.data.params["sampler"] == "heun"]
    history = client.get_metric_history(suite.info.run_id, "fid/heun")
    assert sorted(point.step for point in history) == sorted(counted) == [3, 7]


def test_a_users_store_keeps_its_default_experiment_and_the_users_choices(
        monkeypatch, tmp_path):
    for _ in bench_environment(monkeypatch, tmp_path, store=True):  # an existing store
        client = client_for(URI)
        mine = client.create_experiment("dash", tags={
            NOTE_KEY: "my own notes", "mlflow.experimentKind": "genai_development"})
        assert harness("run", write_suite(tmp_path / "dash.toml", SMALL_SUITE),
                       "--quiet") == 0
        tags = client.get_experiment(mine).tags
        assert tags[NOTE_KEY] == "my own notes"
        assert tags["mlflow.experimentKind"] == "genai_development"
        assert VIEW_KEY in tags
        assert client.get_experiment("0").lifecycle_stage == "active"


def test_a_long_leaderboard_is_cut_at_a_line_and_says_where_the_rest_is():
    text = "# title\n\n| a | b |\n|---|---|\n" + "".join(f"| row{i} | {i} |\n"
                                                    for i in range(400))
    cut = run_description(text)
    assert len(cut) <= 5000 < len(text)
    body, _, tail = cut.partition("\n\n*(cut here")
    assert text.startswith(body + "\n") and body.endswith(" |")
    assert "`leaderboard.md`" in tail
    assert run_description("short\n") == "short\n"


def test_the_leaderboard_table_is_read_from_the_markdown_as_written():
    text = ("# t\n\n| sampler | steps | seeds | fid | nfe |\n|---|---|---|---|---|\n"
            "| data | – | 4 | 5.8 [3.6, 8.1] |  |\n| euler | 5 | 2 | 14 [9.5, 18] ★ | 5 ± 0 |"
            "\n\nlegend | not a row\n")
    table = leaderboard_frame(text)
    assert list(table.columns) == ["sampler", "nfe", "fid", "steps", "seeds"]
    assert table.values.tolist() == [["data", "", "5.8 [3.6, 8.1]", "–", "4"],
                                     ["euler", "5 ± 0", "14 [9.5, 18] ★", "5", "2"]]
