"""Time schedules in suites: the forms a suite may write, expansion into trials (names,
count, configuration hashes), given sigma lists refused before any sampling, the dry
run's grid card, ★/≈ within one schedule unless the suite ranks across, and a tiny run
through the real command and MLflow."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from harness.bench.configuration.canonical import canonical_hash
from harness.bench.configuration.code_identity import code_versions
from harness.bench.reporting.report import annotate, leaderboard, markdown, trials_table
from harness.bench.recording.sinks import SuiteInfo
from harness.bench.configuration.suite import SuiteError, build_suite, model_identity, resolve_trials
from harness.bench.recording.tracking import MLflowSink
from harness.core.schedules import make_grid
from tests.bench_support import bench_environment, harness, trial_runs, write_suite

BASE = {"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}}, "nfe": [6, 10],
        "num_samples": 16, "seeds": [0, 1]}
#: Levels in the VP process's range [0.0105, 152.2] (the ring oracle's default process).
GIVEN = [100.0, 10.0, 1.0, 0.1, 0.02]


def resolved(plugins, **change):
    suite = build_suite(dict(BASE, **change), plugins)
    model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
    return suite, resolve_trials(suite, plugins, model_identity(suite, model), True,
                                 model.sde)


def refused(plugins, **change) -> str:
    with pytest.raises(SuiteError) as info:
        resolved(plugins, **change)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- expansion and hashes ----------------------------------------------------------------

def test_a_one_schedule_suite_hashes_as_before_schedules_were_plugins(plugins):
    """The configuration as it was built before (the schedule's name, nothing else new),
    written out here: its hash is the trial's, so --resume finds existing results."""
    suite, trials = resolved(plugins)
    for trial in trials:
        sampler = plugins.samplers.get(trial.sampler)
        before = {"model": model_identity(suite, plugins.models.get(suite.model)
                                          .build("cpu")),
                  "sampler": trial.sampler, "params": sampler.make_params().to_dict(),
                  "schedule": "karras", "steps": trial.steps, "seed": trial.seed,
                  "num_samples": 16, "metrics": {}, "dtype": "float32",
                  "code": code_versions(plugins, trial.sampler, suite.model, [])}
        assert trial.config_hash == canonical_hash(before)
    # Every spelling of the one default schedule is the same configuration.
    for spelling in ("karras", ["karras"], {"name": "karras"}, {"name": "karras", "rho": 7}):
        _, again = resolved(plugins, schedule=spelling)
        assert [t.config_hash for t in again] == [t.config_hash for t in trials]
        assert [t.name for t in again] == [t.name for t in trials]


def test_several_schedules_expand_like_budgets_with_names_and_hashes(plugins):
    _, one = resolved(plugins)
    _, both = resolved(plugins, schedule=["karras", "log_snr", {"name": "karras", "rho": 5}])
    assert len(both) == 3 * len(one) == 24
    names = [t.name for t in both]
    assert len(set(names)) == len(names)
    assert {"euler-karras-6nfe-seed0", "heun-log_snr-9nfe-seed1",
            "heun-karras(rho=5.0)-5nfe-seed0"} <= set(names)
    assert len({t.config_hash for t in both}) == len(both)
    # Listing more schedules leaves each schedule's own trials as they were.
    karras = {t.config_hash for t in both if t.schedule.label == "karras"}
    assert karras == {t.config_hash for t in one}
    assert {t.config["schedule"] for t in both} == {"karras", "log_snr", "karras(rho=5.0)"}
    grids = {(t.schedule.label, t.steps): t.grid for t in both}
    assert grids[("log_snr", 10)] == make_grid(plugins.models.get("gmm-ring-2d")
                                               .build("cpu").sde, "log_snr", 10)


def test_a_changed_parameter_alone_changes_the_hash_not_the_name(plugins):
    _, default = resolved(plugins)
    _, five = resolved(plugins, schedule={"name": "karras", "rho": 5.0})
    assert [t.name for t in five] == [t.name for t in default]
    assert not {t.config_hash for t in five} & {t.config_hash for t in default}


def test_the_trial_records_the_schedule_as_an_mlflow_param(plugins):
    suite, trials = resolved(plugins, schedule=["karras", {"name": "sigma_list",
                                                           "sigmas": GIVEN}])
    sink = MLflowSink(None, "", "x")
    sink.info = SuiteInfo(suite=suite, trials=trials, skipped=[], model_identity={},
                          environment={})
    logged = {sink.trial_params(t)["schedule"] for t in trials}
    assert logged == {"karras", "sigma_list(sigmas=[100.0, 10.0, 1.0, 0.1, 0.02])"}


# --- refusals, one line each, before any sampling ------------------------------------------

@pytest.mark.parametrize("schedule, message", [
    ("karas", "schedule: unknown schedule 'karas'. Did you mean 'karras'?"),
    (["karras", "log_snrr"], "schedule[1]: unknown schedule 'log_snrr'. Did you mean"),
    ({"name": "karras", "rho": -1.0}, "schedule.rho must be > 0.0, got -1.0"),
    ({"name": "karras", "roh": 5.0}, "schedule: unknown parameter 'roh'. Did you mean 'rho'"),
    ({"rho": 5.0}, 'schedule: a table needs name = "...", one of ddim_quadratic'),
    (["karras", {"name": "karras", "rho": 7.0}], "schedule[1]: 'karras' is listed twice"),
    ([], "schedule must be a schedule's name, a table"),
    ({"name": "uniform_t", "rho": 3.0}, "schedule 'uniform_t' has no parameters"),
    ({"name": "sigma_list", "sigmas": [80.0, 90.0]},
     "schedule: sigmas[1] = 90.0 must be below sigmas[0] = 80.0: noise levels descend"),
    ({"name": "sigma_list", "sigmas": [80.0, -2.0]},
     "schedule: sigmas[1] = -2.0 must be a finite number > 0"),
    ({"name": "sigma_list", "sigmas": [80.0, "a"]},
     "schedule.sigmas[1] must be a number, got 'a'"),
    ({"name": "sigma_list", "sigmas": [500.0, 1.0]},
     "schedule: sigmas[0] = 500.0 is above sigma(T) = 152.167, the largest noise level "
     "of the vp process"),
    (["karras", {"name": "sigma_list", "sigmas": [10.0, 0.001]}],
     "schedule[1]: sigmas[1] = 0.001 is below sigma(t_min) = 0.010486"),
    ({"name": "ddim_quadratic"}, None),   # fine at these budgets ...
])
def test_bad_schedules_are_refused_in_one_line_naming_the_value(plugins, schedule, message):
    if message is None:
        resolved(plugins, schedule=schedule)
        return
    assert message in refused(plugins, schedule=schedule)


def test_a_step_count_a_schedule_cannot_make_is_refused_before_sampling(plugins):
    """... but DDIM's floored quadratic spacing repeats an index beyond 29 steps."""
    message = refused(plugins, nfe=[40], schedule="ddim_quadratic")
    assert "schedule: 40 steps repeat training index 0 of 1000" in message


def test_the_range_is_that_of_the_models_process(plugins):
    """The same list fits VP (sigma_max 152) and not EDM (sigma_max 80)."""
    given = {"name": "sigma_list", "sigmas": GIVEN}
    resolved(plugins, schedule=given)
    message = refused(plugins, schedule=given, model_options={"sde": "edm"})
    assert "schedule: sigmas[0] = 100.0 is above sigma(T) = 80" in message


# --- the dry run's card --------------------------------------------------------------------

@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


CARD_SUITE = """
model = "gmm-ring-2d"
schedule = ["karras", "ddim_uniform"]
nfe = [10]
num_samples = 8
device = "cpu"

[samplers.heun]
[samplers.euler]
steps = [4]
"""


def test_the_dry_run_shows_each_trials_grid_budget_and_declared_nfe(bench, tmp_path,
                                                                    capsys):
    suite = write_suite(tmp_path / "card.toml", CARD_SUITE)
    assert harness("run", suite, "--dry-run") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  heun-") or line.startswith("  euler-")}
    heun = lines["heun-karras-9nfe-seed0"]
    assert "budget=10 -> steps=5    nfe=9 " in heun
    assert "karras: sigma 152.2 .. 0.01049 -> 0 [starts at sigma_max]" in heun
    ddim = lines["heun-ddim_uniform-9nfe-seed0"]
    # DDIM's uniform spacing at 5 steps: training indices 800 .. 0, t = 0.801 .. 0.001.
    assert "ddim_uniform: sigma 25.31 .. 0.01049 -> 0 [starts below sigma_max = 152.2]" \
        in ddim
    assert "budget" not in lines["euler-karras-4nfe-seed0"].split("steps=")[0]

    # Under VE the final step ends at sigma_min = 0.01, and Heun's last step is a full one.
    assert harness("run", suite, "--dry-run", "--set", 'model_options.sde="ve"') == 0
    ve = [line for line in capsys.readouterr().out.splitlines()
          if line.startswith("  heun-karras-")]
    assert len(ve) == 1 and "-> 0.01 [starts at sigma_max]" in ve[0]
    assert "budget=10 -> steps=5    nfe=10" in ve[0]


def test_the_json_dry_run_holds_every_grid_whole(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "card.toml", CARD_SUITE)
    assert harness("run", suite, "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    sde = bench.models.get("gmm-ring-2d").build("cpu").sde
    by_name = {t["name"]: t for t in plan["trials"]}
    trial = by_name["heun-ddim_uniform-9nfe-seed0"]
    assert (trial["budgets"], trial["steps"], trial["nfe_declared"]) == ([10], 5, 9)
    assert trial["grid"]["sigma"] == list(make_grid(sde, "ddim_uniform", 5).sigma)
    assert trial["grid"]["reaches_sigma_max"] is False
    assert by_name["euler-karras-4nfe-seed0"]["grid"]["reaches_sigma_max"] is True
    assert plan["suite"]["schedule"] == ["karras", "ddim_uniform"]
    assert harness("run", suite, "--json") == 2


# --- ★ and ≈ within one schedule ----------------------------------------------------------

#: FID per (sampler, schedule): within karras euler is far ahead; within log_snr the two
#: are close (tied); across schedules euler/karras is far ahead of everything.
FIDS = {("euler", "karras"): 10.0, ("heun", "karras"): 20.0,
        ("euler", "log_snr"): 30.0, ("heun", "log_snr"): 30.02}


def _records():
    draw, records = random.Random(3), []
    for (sampler, schedule), fid in FIDS.items():
        for seed in (0, 1):
            records.append({
                "kind": "trial", "status": "FINISHED", "sampler": sampler, "variant": "",
                "steps": 10, "seed": seed, "name": f"{sampler}-{schedule}-{seed}",
                "config_hash": f"{sampler}-{schedule}-{seed}", "guidance": None,
                "config": {"schedule": schedule}, "metrics": {"fid": fid, "nfe": 10.0},
                "replicates": {"fid": [fid + draw.gauss(0.0, 0.05) for _ in range(200)]}})
    return records


def _marks(rank_across):
    records = _records()
    table = trials_table(records)
    replicates = {r["config_hash"]: r["replicates"] for r in records}
    board = annotate(leaderboard(table), table, replicates, higher_is_better={"fid": False},
                     rank_across_schedules=rank_across)
    return board, dict(zip(board["label"], board["fid_mark"]))


def test_marks_compare_rows_of_one_schedule_unless_the_suite_ranks_across():
    board, apart = _marks(rank_across=False)
    assert apart == {"euler (karras)": "best", "heun (karras)": "",
                     "euler (log_snr)": "best", "heun (log_snr)": "tied"}
    assert "Time schedules are ranked apart" in markdown(board)
    board, together = _marks(rank_across=True)
    assert together == {"euler (karras)": "best", "heun (karras)": "",
                        "euler (log_snr)": "", "heun (log_snr)": ""}
    assert "Time schedules are ranked together" in markdown(board)


def test_one_schedule_leaves_labels_and_notes_as_they_were():
    records = [r for r in _records() if r["config"]["schedule"] == "karras"]
    table = trials_table(records)
    assert sorted(table["label"].unique()) == ["euler", "heun"]
    board = annotate(leaderboard(table), table,
                     {r["config_hash"]: r["replicates"] for r in records})
    assert "Time schedules" not in markdown(board)


# --- through the real command --------------------------------------------------------------

RUN_SUITE = """
experiment = "schedules"
model = "gmm-ring-2d"
schedule = ["karras", {name = "sigma_list", sigmas = [100.0, 10.0, 1.0, 0.1, 0.02]}]
steps = [3]
num_samples = 16
batch_size = 16
device = "cpu"

[samplers.euler]

[metrics.msn]
"""


def test_a_suite_of_two_schedules_runs_logs_and_resumes(monkeypatch, tmp_path, capsys):
    for _ in bench_environment(monkeypatch, tmp_path):
        suite = write_suite(tmp_path / "schedules.toml", RUN_SUITE)
        assert harness("run", suite, "--quiet") == 0
        runs = {r.info.run_name: r.data.params for r in trial_runs("sqlite:///mlflow.db",
                                                                    "schedules")}
        (other,) = set(runs) - {"euler-karras-3nfe-seed0"}
        assert len(runs) == 2 and other.startswith("euler-sigma_list(#")
        given = runs[other]
        assert given["schedule"] == "sigma_list(sigmas=[100.0, 10.0, 1.0, 0.1, 0.02])"
        local = pd.read_csv(tmp_path / "runs" / "schedules" / "leaderboard.csv")
        assert sorted(local["label"]) == ["euler (karras)", f"euler ({other[6:-11]})"]
        from harness.bench.reporting.report import report_from_mlflow

        tracked = report_from_mlflow("sqlite:///mlflow.db", "schedules", tmp_path / "again")
        assert sorted(pd.read_csv(tracked.files["leaderboard.csv"])["label"]) == \
            sorted(local["label"])
        capsys.readouterr()
        assert harness("run", suite, "--quiet", "--resume") == 0
        assert "0 trials on gmm-ring-2d (cpu), 2 skipped" in capsys.readouterr().err
