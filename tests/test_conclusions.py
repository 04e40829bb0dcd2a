"""What a reader concludes, on a tiny oracle suite run through the real command: the
real-data floor row, bootstrap intervals, ties and differences by the paired test, and
the NFE check.

On the 2-D ring oracle: `langevin` with S_churn = 0 is exactly `heun` (Karras et al.
2022, Alg. 2 without churn is Alg. 1), so the two give the same samples from the same
initial noise and the paired test must call them tied; `euler` at 2 steps against
`euler` at 32 steps differs by a large discretisation error and must not be tied.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.bench.reporting.report import records_from_jsonl, trials_table
from harness.metrics.bootstrap import mean_over_seeds, paired_comparison
from tests.bench_support import bench_environment, harness, write_suite

SUITE = """
experiment = "conclusions"
model = "gmm-ring-2d"
schedule = "karras"
seeds = [0, 1]
num_samples = 200
batch_size = 200
device = "cpu"

[model_options]
sde = "edm"

[samplers.heun]
steps = [5]

[samplers.langevin]
steps = [5]
params = { S_churn = 0.0 }

[samplers.euler]
steps = [2, 32]

[metrics.fid]
[metrics.kid]
subsets = 10
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("conclusions")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for _ in bench_environment(monkeypatch, tmp_path):
            suite = write_suite(tmp_path / "conclusions.toml", SUITE)
            assert harness("run", suite, "--quiet") == 0
            out = tmp_path / "runs" / "conclusions"
            yield records_from_jsonl(out / "trials.jsonl").records, out


def _by_name(records):
    return {r["name"]: r for r in records}


def test_every_set_metric_has_replicates_and_an_interval_around_its_value(run):
    records, _ = run
    for record in records:
        assert record["status"] == "FINISHED", record.get("error")
        for key in ("fid", "kid"):
            # A distance's estimate below 0 (KID's can be) is read as 0.
            value = max(record["metrics"][key], 0.0)
            low, high = record["metrics"][f"{key}_ci_low"], record["metrics"][f"{key}_ci_high"]
            assert 0 <= low <= value <= high and high > low
            linear = record["replicates"][f"{key}.linear"]
            assert len(record["replicates"][key]) == len(linear) == 200


def test_identical_samplers_are_tied_and_a_real_difference_is_not(run):
    records, out = run
    by = _by_name(records)
    for seed in (0, 1):
        heun, langevin = by[f"heun-9nfe-seed{seed}"], by[f"langevin-9nfe-seed{seed}"]
        assert heun["metrics"]["fid"] == pytest.approx(langevin["metrics"]["fid"], rel=1e-9)

    def compare(a, b, key="fid"):
        reps_a = mean_over_seeds([by[f"{a}-seed{s}"]["replicates"][key] for s in (0, 1)])
        reps_b = mean_over_seeds([by[f"{b}-seed{s}"]["replicates"][key] for s in (0, 1)])
        obs = [sum(by[f"{n}-seed{s}"]["metrics"][key] for s in (0, 1)) / 2 for n in (a, b)]
        return paired_comparison(obs[0], obs[1], reps_a, reps_b)

    assert compare("heun-9nfe", "langevin-9nfe").tied
    coarse = compare("euler-2nfe", "euler-32nfe")
    assert not coarse.tied and coarse.low > 0

    board = (out / "leaderboard.md").read_text()
    heun_row = next(line for line in board.splitlines() if line.startswith("| heun "))
    langevin_row = next(line for line in board.splitlines()
                        if line.startswith("| langevin "))
    # One of the two identical rows is the best at its budget, the other tied with it.
    assert ("★" in heun_row) != ("★" in langevin_row)
    assert ("≈" in heun_row) != ("≈" in langevin_row)


def test_the_floor_row_is_real_data_at_the_same_size(run):
    records, out = run
    floor = [r for r in records if r["floor"]]
    assert len(floor) >= 4 and all(r["sampler"] == "data" for r in floor)
    assert all("nfe" not in r["metrics"] for r in floor)
    # Exact samples against exact samples: FID at N = 200 is small but not zero.
    assert all(0 < r["metrics"]["fid"] < 0.1 for r in floor)
    board = (out / "leaderboard.md").read_text()
    assert board.splitlines()[4].startswith("| data ")      # first row of the table
    assert "held-out real data" in board
    table = trials_table(records)
    assert (table["sampler"] == "data").sum() == len(floor)


def test_counted_nfe_matches_what_every_sampler_declares(run):
    records, _ = run
    for record in records:
        if not record["floor"]:
            assert record["metrics"]["nfe"] == record["nfe_expected"]
            assert record["warnings"] == []


def test_overhead_is_never_below_one(run):
    records, _ = run
    for record in records:
        if not record["floor"]:
            assert record["metrics"]["overhead_ratio"] >= 1.0 - 1e-6
            assert record["metrics"]["network_s"] <= record["metrics"]["wall_clock_s"]


def test_no_conclusion_is_a_physically_impossible_number(run):
    _, out = run
    frame = pd.read_csv(out / "leaderboard.csv")
    for column in ("fid_mean", "fid_ci_low", "overhead_ratio_mean"):
        assert (frame[column].dropna() >= 0).all(), column
    assert (frame["overhead_ratio_mean"].dropna() >= 1.0 - 1e-6).all()
    assert frame["fid_ci_high"].dropna().map(math.isfinite).all()


def test_the_report_read_back_from_mlflow_concludes_the_same(run, tmp_path):
    from harness.bench.reporting.report import report_from_mlflow

    _, out = run
    uri = f"sqlite:///{out.parent.parent / 'mlflow.db'}"
    again = report_from_mlflow(uri, "conclusions", tmp_path)
    local = pd.read_csv(out / "leaderboard.csv")
    tracked = pd.read_csv(again.files["leaderboard.csv"])
    columns = ["label", "steps", "fid_mean", "fid_ci_low", "fid_ci_high", "fid_mark"]
    assert local[columns].fillna("").equals(tracked[columns].fillna(""))
