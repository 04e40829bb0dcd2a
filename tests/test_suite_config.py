"""Suites: parsing, overrides, dry runs, and refusing bad input before any compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench.configuration.suite import (
    SuiteError,
    apply_overrides,
    build_suite,
    load_suite,
    model_identity,
    read_toml,
    resolve_trials,
    steps_for_budget,
    suite_path,
)
from tests.bench_support import TINY_SUITE, bench_environment, harness, write_suite

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}}, "steps": [4, 8],
        "num_samples": 16}


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path, store=False)


def trials_of(raw, plugins):
    suite = build_suite(raw, plugins)
    model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
    return suite, resolve_trials(suite, plugins, model_identity(suite, model))


def refused(raw, plugins, *fragments):
    with pytest.raises(SuiteError) as info:
        build_suite(raw, plugins)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def test_packaged_suites_parse_and_validate(plugins):
    for name in ("smoke", "default"):
        raw = read_toml(suite_path(name))
        assert raw["samplers"], name
    smoke = load_suite("smoke", plugins)
    assert [s.name for s in smoke.samplers] == ["euler", "heun"]
    default = load_suite("default", plugins)
    names = {s.name for s in default.samplers}
    assert names == {"euler", "heun", "euler_maruyama", "predictor_corrector", "langevin",
                     "lambda_sde", "dpmpp_2m", "unipc"}


def test_grid_expands_to_cartesian_product_with_readable_names(plugins):
    raw = dict(BASE, samplers={"langevin": {"params": {"S_churn": [0.0, 10.0],
                                                       "S_noise": [1.0, 1.003]}}},
               seeds=[0, 1])
    suite, trials = trials_of(raw, plugins)
    assert len(trials) == 4 * 2 * 2
    names = [t.name for t in trials]
    assert len(set(names)) == len(names)
    assert "langevin-S_churn=10-S_noise=1.003-15nfe-seed1" in names
    assert all(len(t.config_hash) == 64 for t in trials)


def test_nfe_budgets_pick_steps_from_the_capabilities(plugins):
    heun = plugins.samplers.get("heun")
    pc = plugins.samplers.get("predictor_corrector")
    euler = plugins.samplers.get("euler")
    assert steps_for_budget(heun, heun.make_params(), 10) == 5            # 2N - 1 = 9
    assert steps_for_budget(heun, heun.make_params(), 35) == 18           # 35 exactly
    assert steps_for_budget(pc, pc.make_params(), 100) == 50              # 2N
    assert steps_for_budget(euler, euler.make_params(), 20) == 20
    raw = dict(BASE, steps=None, nfe=[10, 35])
    _, trials = trials_of({k: v for k, v in raw.items() if v is not None}, plugins)
    assert {(t.sampler, t.steps, t.nfe) for t in trials} == {
        ("euler", 10, 10), ("euler", 35, 35), ("heun", 5, 9), ("heun", 18, 35)}


def test_config_hash_covers_what_determines_the_result_only(plugins):
    _, base = trials_of(BASE, plugins)
    _, same = trials_of(dict(BASE, batch_size=3, device="cpu", experiment="other"), plugins)
    _, more = trials_of(dict(BASE, num_samples=17), plugins)
    _, other_sde = trials_of(dict(BASE, model_options={"sde": "ve"}), plugins)
    hashes = [t.config_hash for t in base]
    assert hashes == [t.config_hash for t in same]
    assert not set(hashes) & {t.config_hash for t in more}
    assert not set(hashes) & {t.config_hash for t in other_sde}
    # Explicit defaults are the same configuration as omitted ones.
    _, explicit = trials_of(dict(BASE, samplers={"euler": {}, "heun": {}},
                                 schedule="karras", network_dtype="native", compile=False),
                            plugins)
    assert hashes == [t.config_hash for t in explicit]
    # How the network computes changes its outputs, so it is part of the configuration.
    _, bf16 = trials_of(dict(BASE, network_dtype="bf16"), plugins)
    _, compiled = trials_of(dict(BASE, compile=True), plugins)
    assert len(set(hashes) | {t.config_hash for t in bf16 + compiled}) == 3 * len(hashes)


def test_the_recorded_reference_results_keep_their_config_hashes(plugins):
    """Options added later (the network's dtype, compilation) leave a trial's
    configuration as it was. The code versions ("code") are part of the hash since
    these results were recorded, so --resume reruns them, as it must after a change
    of code; without them, the configurations hash as recorded."""
    recorded = [json.loads(line) for line in
                (ROOT / "results" / "default" / "trials.jsonl").read_text().splitlines()]
    recorded = {r["name"]: r["config_hash"] for r in recorded
                if r["kind"] == "trial" and not r.get("floor")}
    suite = load_suite("default", plugins)
    model = plugins.models.get(suite.model).build("cpu", **suite.model_options)
    trials = resolve_trials(suite, plugins, model_identity(suite, model))
    assert len(recorded) == len(trials) == 64
    assert all(t.config["code"]["harness"] for t in trials)
    assert {t.name: t.config_hash for t in trials} == recorded


def test_overrides_replace_fields_and_select_samplers(plugins):
    raw = dict(BASE, samplers={"euler": {"steps": [2]}, "heun": {}}, model_options={"sde": "ve"})
    out = apply_overrides(raw, {"samplers": ["heun", "langevin"], "steps": [10, 20],
                                "num_samples": 2000, "seeds": [0, 1],
                                "set": ["samplers.langevin.params.S_churn=[0, 5]",
                                        "schedule=log_snr"]})
    suite = build_suite(out, plugins)
    assert [s.name for s in suite.samplers] == ["heun", "langevin"]
    assert all(s.steps == (10, 20) for s in suite.samplers)
    assert suite.samplers[1].grid == {"S_churn": [0, 5]}
    assert (suite.num_samples, suite.seeds) == (2000, (0, 1))
    assert [s.label for s in suite.schedules] == ["log_snr"]
    assert suite.model_options == {"sde": "ve"}
    other = build_suite(apply_overrides(raw, {"model": "gmm-64d"}), plugins)
    assert other.model_options == {}          # options of the old model do not carry over
    assert raw["samplers"]["euler"] == {"steps": [2]}    # the input is not modified


def test_dry_run_prints_trials_and_computes_nothing(bench, tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    assert harness("run", suite, "--dry-run", "--samplers", "heun,langevin",
                   "--seeds", "0,1") == 0
    out = capsys.readouterr().out
    assert "8 trials:" in out
    assert "langevin-5nfe-seed1" in out and "heun-11nfe-seed0" in out
    assert "num_samples = 32" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("change, fragments", [
    ({"samplers": {"heunn": {}}}, ["unknown sampler 'heunn'", "Did you mean 'heun'"]),
    ({"model": "gmm-ring"}, ["model", "Did you mean 'gmm-ring-2d'"]),
    ({"metrics": {"fidd": {}}}, ["unknown metric 'fidd'"]),
    ({"schedule": "karas"}, ["schedule", "Did you mean 'karras'"]),
    ({"num_sample": 5}, ["unknown key 'num_sample'", "Did you mean 'num_samples'"]),
    ({"samplers": {"heun": {"stepz": [1]}}}, ["samplers.heun", "Did you mean 'steps'"]),
    ({"samplers": {"langevin": {"params": {"S_chrun": 1.0}}}},
     ["samplers.langevin.params", "S_chrun", "Did you mean 'S_churn'"]),
    ({"samplers": {"langevin": {"params": {"S_churn": [1.0, -1.0]}}}},
     ["samplers.langevin.params", "S_churn", ">= 0.0"]),
    ({"model_options": {"sdee": "vp"}}, ["model_options", "Did you mean 'sde'"]),
    ({"metrics": {"nll": {"num_point": 8}}}, ["metrics.nll", "Did you mean 'num_points'"]),
    ({"steps": [0, 4]}, ["steps[0] must be an integer >= 1, got 0"]),
    ({"samplers": {"heun": {"steps": [2.5]}}}, ["samplers.heun.steps", "2.5"]),
    ({"num_samples": 0}, ["num_samples must be an integer >= 1"]),
    ({"batch_size": -3}, ["batch_size must be an integer >= 1"]),
    ({"seeds": [0, -1]}, ["seeds[1] must be an integer >= 0, got -1"]),
    ({"device": "tpu"}, ["device must be one of"]),
    ({"dtype": "float16"}, ["dtype must be one of"]),
    ({"dtype": "bf16"}, ["dtype must be one of float32, float64", "sampler's state",
                         "--network-dtype bf16"]),
    ({"network_dtype": "int8"}, ["network_dtype must be one of native, fp32, bf16, fp16"]),
    ({"compile": "yes"}, ["compile must be true or false, got 'yes'"]),
    ({"nfe": [10]}, ["either 'steps' or 'nfe'"]),
    ({"samplers": {}}, ["at least one sampler"]),
])
def test_bad_suites_are_refused_naming_the_field(plugins, change, fragments):
    refused(dict(BASE, **change), plugins, *fragments)


def test_missing_required_fields_are_named(plugins):
    refused({k: v for k, v in BASE.items() if k != "num_samples"}, plugins,
            "'num_samples' is required")
    refused({k: v for k, v in BASE.items() if k != "steps"}, plugins,
            "samplers.euler: no step budget")


def test_malformed_toml_is_reported_with_file_and_line(tmp_path, plugins):
    path = write_suite(tmp_path / "broken.toml",
                       'model = "gmm-ring-2d"\nnum_samples = = 4\nsteps = [1]\n')
    with pytest.raises(SuiteError) as info:
        load_suite(str(path), plugins)
    message = str(info.value)
    assert "broken.toml" in message and "line 2" in message


def test_unknown_suite_name_and_bad_cli_values(bench, tmp_path, capsys):
    assert harness("run", "smok", "--dry-run") == 2
    assert "Did you mean 'smoke'" in capsys.readouterr().err
    assert harness("run", "smoke", "--dry-run", "--steps", "4,x") == 2
    assert "--steps: expected integers" in capsys.readouterr().err
    assert harness("run", "smoke", "--dry-run", "--set", "noequals") == 2
    assert "--set expects key=value" in capsys.readouterr().err
    assert harness("run", "smoke", "--dry-run", "--samplers", "heun,eulr") == 2
    assert "Did you mean 'euler'" in capsys.readouterr().err
    assert not Path("mlflow.db").exists()


def test_an_error_names_the_value_by_its_path_in_the_file(plugins):
    message = refused(dict(BASE, samplers={"langevin": {"params": {"S_churn": [1.0, -1.0]}}}),
                      plugins)
    assert message == ("suite <memory>: samplers.langevin.params.S_churn[1] must be >= 0.0, "
                       "got -1.0")
    message = refused(dict(BASE, samplers={"predictor_corrector": {"params": {"snr": -1}}}),
                      plugins)
    assert message.endswith("samplers.predictor_corrector.params.snr must be >= 0.0, got -1")
    message = refused(dict(BASE, samplers={"heun": {"steps": [3, True]}}), plugins)
    assert message.endswith("samplers.heun.steps[1] must be an integer, got True")


def test_every_problem_of_a_suite_is_named_on_one_line(plugins):
    message = refused(dict(BASE, num_samples=0, batch_size="big", compile=1), plugins)
    assert "\n" not in message
    for fragment in ("num_samples must be an integer >= 1, got 0",
                     "batch_size must be an integer, got 'big'",
                     "compile must be true or false, got 1"):
        assert fragment in message, message


def test_constraints_between_hyperparameters_are_checked_on_every_grid_point(plugins):
    ok = {"S_tmin": [0.0, 1.0], "S_tmax": [2.0]}
    build_suite(dict(BASE, samplers={"langevin": {"params": ok}}), plugins)
    bad = {"S_tmin": [0.0, 3.0], "S_tmax": [2.0]}
    refused(dict(BASE, samplers={"langevin": {"params": bad}}), plugins,
            "samplers.langevin.params", "'S_tmin' (3.0) must not exceed 'S_tmax' (2.0)")


@pytest.mark.parametrize("change, fragments", [
    ({"num_samples": 10**12}, ["num_samples must be an integer <= 10000000, got 1000000000000"]),
    ({"batch_size": 2 * 10**7}, ["batch_size must be an integer <= 10000000"]),
    ({"steps": [10, 2 * 10**9]}, ["steps[1] must be an integer <= 100000"]),
    ({"steps": None, "nfe": [3 * 10**9]}, ["nfe[0] must be an integer <= 1000000"]),
    ({"seeds": [2**64]}, ["seeds[0] must be an integer <= 9223372036854775807"]),
    ({"samplers": {"predictor_corrector": {"params": {"n_corrector_steps": 10**7}}}},
     ["samplers.predictor_corrector", "80,000,008 network evaluations per sample",
      "cap of 1,000,000"]),
    ({"steps": [90_000], "samplers": {"predictor_corrector": {
        "params": {"n_corrector_steps": [1, 20]}}}},
     ["90000 step(s) of predictor_corrector with {'n_corrector_steps': 20} cost 1,890,000"]),
    ({"samplers": {"langevin": {"params": {k: list(range(20)) for k in
                                           ("S_churn", "S_tmin", "S_noise", "S_tmax")}}}},
     ["samplers: the grids, budgets and seeds make 320,000 trials, above the cap of 100,000"]),
])
def test_absurd_sizes_are_refused_with_the_cap(plugins, change, fragments):
    refused({k: v for k, v in dict(BASE, **change).items() if v is not None}, plugins,
            *fragments)


def test_a_batch_larger_than_the_trial_is_accepted(plugins):
    """As before: the runner draws min(batch_size, num_samples) at a time."""
    assert build_suite(dict(BASE, batch_size=64), plugins).batch_size == 64


def nearest_by_scan(sampler, params, budget):
    """The definition: the step count in 1..budget+1 whose NFE is nearest, ties to fewer."""
    gaps = [(abs(sampler.expected_nfe(n, params) - budget), n) for n in range(1, budget + 2)]
    return min(gaps)[1]


@pytest.mark.parametrize("sampler, values", [
    ("euler", {}), ("heun", {}), ("langevin", {}), ("predictor_corrector", {}),
    ("predictor_corrector", {"n_corrector_steps": 0}),
    ("predictor_corrector", {"n_corrector_steps": 3}),
    ("predictor_corrector", {"corrector": "none"}),
])
def test_budgets_pick_the_nearest_step_count(plugins, sampler, values):
    s = plugins.samplers.get(sampler)
    params = s.make_params(values)
    for budget in range(1, 60):
        assert steps_for_budget(s, params, budget) == nearest_by_scan(s, params, budget), budget


def test_a_suite_that_is_not_utf8_is_a_one_line_error(tmp_path, plugins):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "café"\n'.encode("latin-1"))
    with pytest.raises(SuiteError, match=r"latin1.toml' is not UTF-8 text"):
        load_suite(str(path), plugins)


def test_absurd_command_line_sizes_are_refused_before_the_model_loads(bench, tmp_path,
                                                                     capsys, monkeypatch):
    import harness.commands.run as run_command

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run_command, "load_model", no_model)
    assert harness("run", "smoke", "--num-samples", str(10**12)) == 2
    assert "num_samples must be an integer <= 10000000" in capsys.readouterr().err
    assert harness("run", "smoke", "--steps", f"10,{10**9}") == 2
    assert "steps[1] must be an integer <= 100000" in capsys.readouterr().err
