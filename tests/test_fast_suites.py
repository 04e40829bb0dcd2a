"""The low-NFE suites `fast` (digits model) and `fast_oracle` (64-D oracle): what they
hold, the trials they expand to, and their dry runs. `tox -e bench-fast` runs both."""

from __future__ import annotations

import configparser
from collections import defaultdict
from pathlib import Path

import pytest

from harness.bench.configuration.suite import load_suite, model_identity, resolve_trials
from tests.bench_support import bench_environment, harness
from tests.conftest import all_sampler_names

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (4, 6, 8, 10, 15)
SCHEDULES = ["karras", "log_snr"]
#: Heun costs 2N - 1: the steps nearest each budget, ties to fewer, give these NFE.
HEUN_NFE = {3, 5, 7, 9, 15}
#: The stochastic samplers `fast` keeps (its comment says why these and not the others).
CHOSEN_STOCHASTIC = {"dpmpp_2m_sde", "euler_ancestral"}


def built_in_deterministic(plugins) -> set[str]:
    """The deterministic samplers the project writes (not those it adapts from other
    libraries, `library:name`): the suites must hold every one."""
    return {name for name in all_sampler_names()
            if plugins.samplers.origin(name).module.startswith("harness_plugins.")
            and not plugins.samplers.get(name).capabilities.stochastic}


def trials_of(name: str, plugins):
    suite = load_suite(name, plugins)
    model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
    trials = resolve_trials(suite, plugins, model_identity(suite, model), True, model.sde)
    return suite, trials


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def test_fast_holds_every_deterministic_sampler_and_the_chosen_stochastic_ones(plugins):
    suite = load_suite("fast", plugins)
    deterministic = built_in_deterministic(plugins)
    assert {"euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm",
            "deis"} <= deterministic
    assert {s.name for s in suite.samplers} == deterministic | CHOSEN_STOCHASTIC
    assert all(not s.grid for s in suite.samplers)          # the papers' defaults
    assert [s.label for s in suite.schedules] == SCHEDULES
    assert not suite.rank_across_schedules
    assert set(suite.metrics) == {"fid", "kid"}
    assert (suite.model, suite.seeds, suite.num_samples) == ("digits", (0,), 512)


def test_fast_oracle_holds_the_deterministic_samplers_on_the_exact_metrics(plugins):
    suite = load_suite("fast_oracle", plugins)
    assert {s.name for s in suite.samplers} == built_in_deterministic(plugins)
    assert [s.label for s in suite.schedules] == SCHEDULES
    assert set(suite.metrics) == {"ode_error", "discrete_kl"}
    assert (suite.model, suite.model_options) == ("gmm-64d", {"sde": "edm"})
    assert suite.seeds == (0, 1)


@pytest.mark.parametrize("name, seeds", [("fast", 1), ("fast_oracle", 2)])
def test_each_sampler_and_schedule_expands_to_the_five_budgets(plugins, name, seeds):
    suite, trials = trials_of(name, plugins)
    assert len(trials) == len(suite.samplers) * len(SCHEDULES) * len(BUDGETS) * seeds
    nfe = defaultdict(set)
    for trial in trials:
        nfe[trial.sampler, trial.schedule.label].add(trial.nfe)
        assert f"-{trial.schedule.label}-{trial.nfe}nfe-" in trial.name
    for (sampler, _), counted in nfe.items():
        assert counted == (HEUN_NFE if sampler == "heun" else set(BUDGETS)), sampler
    assert len({t.config_hash for t in trials}) == len(trials)


def test_the_oracle_trials_see_the_digits_trials_grids(plugins):
    """The oracle suite's comment promises the same sigma grids as `fast`: the two differ
    only in the model."""
    _, digits = trials_of("fast", plugins)
    _, oracle = trials_of("fast_oracle", plugins)
    grids = {(t.sampler, t.schedule.label, t.steps): list(t.grid.sigma) for t in digits}
    for trial in oracle:
        expected = grids[trial.sampler, trial.schedule.label, trial.steps]
        assert list(trial.grid.sigma) == pytest.approx(expected, rel=1e-6), trial.name


@pytest.mark.parametrize("name, count", [("fast", 100), ("fast_oracle", 160)])
def test_the_dry_run_prints_the_trials_and_computes_nothing(bench, tmp_path, capsys, name,
                                                            count):
    assert harness("run", name, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"{count} trials:" in out
    assert "heun-log_snr-15nfe-seed0" in out and "dpmpp_3m-karras-4nfe-seed0" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_tox_bench_fast_runs_both_suites_with_the_same_arguments():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    commands = [line.strip() for line in
                tox["testenv:bench-fast"]["commands"].strip().splitlines()]
    assert commands == ["harness run fast --device cpu {posargs}",
                        "harness run fast_oracle --device cpu {posargs}"]
