"""What the MLflow UI shows of a suite: the experiment's kind, note and saved view, and the
leaderboard as a run description and a table.

MLflow 3 shows an experiment in its GenAI view or its model-training view: releases
that decide per experiment read the tag `mlflow.experimentKind`; 3.17 follows a switch in
its sidebar, which each browser keeps for itself and a link's `?workflowType=
machine_learning` sets for that page. Its runs table lists nested runs folded under their
parent, with none of their metrics as columns. So the harness gives its experiment:

- the model-training kind, and a note (the experiment's description) saying what the
  runs are, where the comparison is and what the columns mean;
- a saved view, *Trials by FID* in the runs page's *Views* menu (an experiment tag
  `mlflow.sharedViewState.<id>`, the envelope MLflow 3.17 writes): the trial runs alone,
  sorted by FID, with sampler, steps, seed, NFE, FID and KID as columns. An MLflow that
  stores its views otherwise ignores the tag.

and the suite run the leaderboard: as its description (Markdown, rendered on the run's
overview) and as `LEADERBOARD_TABLE`, a `log_table` artefact the artefact view shows as a
table. What a user has set (a note of their own, another kind) is left alone.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
#: The Markdown MLflow shows as an experiment's or a run's description.
NOTE_TAG = "mlflow.note.content"
#: How the harness's note begins (the UI shows only this line until it is unfolded); a
#: note that does not is the user's own and is never overwritten.
NOTE_TITLE = ("**Sampler benchmark** (diffusion-sampler-harness). The comparison: set the "
              "sidebar to *Model training*, then *Views* > *Trials by FID*; the "
              "leaderboard is in the newest suite run's *Artifacts*.")
TRIALS_VIEW_ID = "harness-trials-by-fid"
TRIALS_VIEW_TAG = f"mlflow.sharedViewState.{TRIALS_VIEW_ID}"
TRIALS_VIEW_NAME = "Trials by FID"
TRIAL_FILTER = "tags.`harness.kind` = 'trial'"
#: The saved view's columns and their widths in pixels (MLflow puts metrics before params).
TRIAL_COLUMNS = {"attributes.`Run Name`": 240, "metrics.`fid`": 120, "metrics.`kid`": 120,
                 "metrics.`nfe`": 70, "params.`sampler`": 140, "params.`steps`": 70,
                 "params.`seed`": 70}
#: The leaderboard as an MLflow table (`log_table`): the artefact view renders it.
LEADERBOARD_TABLE = "leaderboard_table.json"
#: The leaderboard table's first columns: rows are compared at equal NFE.
LEADERBOARD_FRONT = ("sampler", "nfe", "fid", "kid")
#: The longest tag value every MLflow store and version accepts.
MAX_TAG_CHARS = 5000


def experiment_link(experiment_id: str) -> str:
    """The experiment's trials by FID in the model-training view, relative to the UI."""
    return (f"#/experiments/{experiment_id}/runs?viewStateShareKey={TRIALS_VIEW_ID}"
            f"&workflowType=machine_learning")


def experiment_note(name: str, experiment_id: str) -> str:
    """The experiment's description: what it holds and where to look. MLflow renders a
    line break as a break, so each paragraph is one line."""
    paragraphs = [
        NOTE_TITLE,
        f"[Open the trials of `{name}` sorted by FID]({experiment_link(experiment_id)}).",
        "One run per `harness run` (the *suite run*, named `<suite>-<date>-<time>`), and "
        "nested under it one run per trial (`<sampler>-<NFE>nfe-seed<k>`: one sampler at "
        "one step count and seed; `data-draw<k>`: held-out real data, the floor no sampler "
        "is expected to beat).",
        f"**The leaderboard** is the newest suite run's description and, in its "
        f"*Artifacts*, `{LEADERBOARD_TABLE}` (a table: FID and KID with their 95 % "
        f"intervals, ★ the best at its NFE budget, ≈ tied with it), `fid_vs_nfe.png` "
        f"(FID against NFE, one line per sampler, 95 % intervals), `leaderboard.md` and "
        f"`.csv`.",
        f"**Trial columns**: `fid`, `kid` (lower is better; compare at equal "
        f"`num_samples` only), `nfe` (network evaluations per sample, counted at the "
        f"model call), `sampler`, `steps`, `seed`, `wall_clock_s`. *Columns* adds "
        f"others; filter with ``{TRIAL_FILTER}``.",
        "**Charts of a suite run** (*Model metrics*: `fid/<sampler>`, ...): the x-axis "
        "MLflow calls *Step* is the NFE, the value the mean over seeds.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def trials_view() -> str:
    """The saved view's tag value: MLflow 3.17's envelope around the runs page's state."""
    now = int(time.time() * 1000)
    state = {"searchFilter": TRIAL_FILTER, "orderByKey": "metrics.`fid`",
             "orderByAsc": True,
             "selectedColumns": [c for c in TRIAL_COLUMNS if not c.startswith("attr")],
             "columnOrder": list(TRIAL_COLUMNS), "columnWidths": TRIAL_COLUMNS}
    return json.dumps({"name": TRIALS_VIEW_NAME, "createdAt": now, "updatedAt": now,
                       "state": json.dumps(state)})


def describe_experiment(client: Any, experiment_id: str, name: str) -> None:
    """Give the experiment the model-training kind, the note and the saved view, each
    unless it is there already (a kind or note the user chose is theirs)."""
    tags = client.get_experiment(experiment_id).tags
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    note, wanted = tags.get(NOTE_TAG), experiment_note(name, experiment_id)
    if note != wanted and (note is None or note.startswith(NOTE_TITLE)):
        client.set_experiment_tag(experiment_id, NOTE_TAG, wanted)
    if TRIALS_VIEW_TAG not in tags:
        client.set_experiment_tag(experiment_id, TRIALS_VIEW_TAG, trials_view())


def hide_empty_default_experiment(client: Any) -> None:
    """Delete (restorably: `mlflow experiments restore --experiment-id 0`) the `Default`
    experiment MLflow creates in every new store, if nothing is in it. For a SQLite store
    the harness has just created, never for anyone else's."""
    from mlflow.entities import ViewType

    default = client.get_experiment("0")
    if default.lifecycle_stage == "active" and not client.search_runs(
            ["0"], run_view_type=ViewType.ALL, max_results=1):
        client.delete_experiment("0")


def run_description(leaderboard_md: str, limit: int = MAX_TAG_CHARS) -> str:
    """The report's `leaderboard.md` as a run description: whole lines within `limit`
    characters, then where the rest is."""
    if len(leaderboard_md) <= limit:
        return leaderboard_md
    tail = "\n\n*(cut here: the whole leaderboard is the artefact `leaderboard.md`)*\n"
    kept, size = [], len(tail)
    for line in leaderboard_md.splitlines(keepends=True):
        if size + len(line) > limit:
            break
        kept.append(line)
        size += len(line)
    return "".join(kept).rstrip("\n") + tail


def leaderboard_frame(leaderboard_md: str) -> pd.DataFrame:
    """The first Markdown table of `leaderboard_md` as strings, cells as written, its
    columns `LEADERBOARD_FRONT` first (the comparison fits the artefact view's width)."""
    import pandas as pd

    rows: list[list[str]] = []
    for line in leaderboard_md.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 2:
        return pd.DataFrame()
    header = rows[0]
    table = pd.DataFrame([row + [""] * (len(header) - len(row)) for row in rows[2:]],
                         columns=header)
    front = [c for c in LEADERBOARD_FRONT if c in table.columns]
    return table[front + [c for c in table.columns if c not in front]]
