"""The resolved plan: what `--dry-run` prints is what runs, and the runner follows the plan
(its entries, batches and floor draws) without re-deriving any of it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness.bench.running.plan import FloorDraw, SamplerRun, resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.configuration.suite import build_suite
from harness.core.distributed import resolve_device
from harness.plugin.manager import get_plugins
from tests.bench_support import bench_environment, harness, write_suite

SUITE = """
experiment = "planned"
model = "gmm-ring-2d"
schedule = "karras"
nfe = [4, 9]
seeds = [0]
num_samples = 24
batch_size = 10
device = "cpu"

[samplers.euler]
[samplers.heun]

[metrics.fid]
"""


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


class Recorder:
    """A sink that keeps what it is told."""

    def __init__(self):
        self.started, self.ended = [], []

    def suite_started(self, info):
        self.info = info

    def trial_started(self, trial):
        self.started.append(trial.name)

    def trial_ended(self, result):
        self.ended.append(result)


def test_the_plan_printed_by_a_dry_run_is_the_plan_that_ran(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "planned.toml", SUITE)
    assert harness("run", suite, "--dry-run", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert harness("run", suite, "--quiet") == 0
    ran = json.loads((tmp_path / "runs/planned/plan.json").read_text())
    assert printed == ran
    # The floor's draws are entries of their own, before the sampler trials, and every
    # entry of the plan is a record of the run.
    assert [f["name"] for f in ran["floor"]] == [f"data-draw{d}" for d in range(4)]
    assert [t["name"] for t in ran["trials"]] == [
        "euler-4nfe-seed0", "euler-9nfe-seed0", "heun-3nfe-seed0", "heun-9nfe-seed0"]
    records = [json.loads(line) for line in
               (tmp_path / "runs/planned/trials.jsonl").read_text().splitlines()]
    names = [r["name"] for r in records if r["kind"] == "trial"]
    assert names == [f["name"] for f in ran["floor"]] + [t["name"] for t in ran["trials"]]


def test_the_runner_draws_the_batches_and_entries_the_plan_holds(tmp_path):
    plugins = get_plugins()
    suite = build_suite({"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}},
                         "steps": [3], "num_samples": 13, "batch_size": 13,
                         "device": "cpu", "metrics": {}}, plugins)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    assert [type(e) for e in plan.entries] == [SamplerRun, SamplerRun]
    assert plan.batches() == [list(range(13))]
    # A plan changed after resolution runs as changed: the runner reads it, and nothing
    # downstream goes back to the suite for the batch size or the trial list.
    seen = []
    heun = plan.entries[1]
    original = heun.sampler.fn

    def watching(model, x, grid, noise, callback, params):
        seen.append(x.shape[0])
        return original(model, x, grid, noise, callback, params)

    watched = dataclasses.replace(heun, sampler=dataclasses.replace(heun.sampler,
                                                                    fn=watching))
    changed = dataclasses.replace(plan, entries=(watched,), batch_size=5)
    recorder = Recorder()
    results = run_plan(changed, Sinks([recorder]), quiet=True)
    assert [r.status for r in results] == [FINISHED]
    assert recorder.started == [watched.trial.name]
    assert seen[-3:] == [5, 5, 3]  # the timed run, after the untimed warm-up
    assert results[0].metrics["nfe"] == heun.trial.nfe


def test_floor_draws_are_their_own_entries():
    plugins = get_plugins()
    suite = build_suite({"model": "gmm-ring-2d", "samplers": {"euler": {}}, "steps": [3],
                         "num_samples": 16, "seeds": [0, 1], "device": "cpu",
                         "metrics": {"fid": {}}}, plugins)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    floor = [e for e in plan.entries if isinstance(e, FloorDraw)]
    assert [e.draw for e in floor] == [0, 1, 2, 3]
    assert plan.entries[:4] == tuple(floor)
    # Resume: what finished before is skipped, and only that.
    done = {floor[0].trial.config_hash, plan.sampler_runs[1].trial.config_hash}
    resumed = resolve_plan(suite, plugins, plan.model, device, finished=lambda: done)
    assert {t.config_hash for t in resumed.skipped} == done
    assert len(resumed.entries) == len(plan.entries) - 2


def test_guided_trials_plan_their_network_rows():
    plugins = get_plugins()
    suite = build_suite({"model": "gmm-cond-2d", "samplers": {"heun": {}}, "steps": [3],
                         "num_samples": 6, "device": "cpu", "guidance": [0.0, 1.0, 2.5],
                         "metrics": {}}, plugins)
    device = resolve_device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    rows = {run.trial.guidance: run.network_rows for run in plan.sampler_runs}
    assert rows == {0.0: 1, 1.0: 1, 2.5: 2}
    assert plan.sampling_work == sum(r.trial.nfe * rows[r.trial.guidance]
                                     for r in plan.sampler_runs) * 6
