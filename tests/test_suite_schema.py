"""`harness schema`: the JSON Schema of suite files agrees with the harness's own checks.

The emitted schema is checked by an independent validator (the `jsonschema` package):
every shipped suite and the suite module's documented example pass it; a set of broken
suites fails it, and each of those is refused by `build_suite` too, so an editor and
`harness run` disagree on none of them.
"""

from __future__ import annotations

import json
import re
import sys

import jsonschema
import pytest

from harness.bench.configuration import suite as suite_module
from harness.bench.configuration.suite import (MAX_NUM_SAMPLES, MAX_STEPS, SuiteError, build_suite,
                                 packaged_suites, read_toml)
from harness.bench.configuration.suite_jsonschema import suite_json_schema
from tests.bench_support import harness

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BASE = {"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}}, "steps": [4, 8],
        "num_samples": 16}


@pytest.fixture(scope="module")
def validator(plugins):
    schema = suite_json_schema(plugins)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator, raw) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(raw)]


def docstring_example() -> str:
    """The indented TOML block of `harness.bench.configuration.suite`'s docstring."""
    block = re.search(r"\n\n((?:    .*\n|\n)+?)\n\S", suite_module.__doc__)
    return "\n".join(line[4:] for line in block.group(1).splitlines())


def test_the_schema_is_strict_json_with_every_installed_name(plugins, validator):
    schema = suite_json_schema(plugins)
    json.dumps(schema, allow_nan=False)      # no Infinity/NaN: editors read strict JSON
    props = schema["properties"]
    assert props["model"]["enum"] == plugins.models.names()
    assert sorted(props["samplers"]["properties"]) == plugins.samplers.names()
    assert sorted(props["metrics"]["properties"]) == plugins.metrics.names()
    churn = props["samplers"]["properties"]["langevin"]["properties"]["params"]
    assert churn["properties"]["S_churn"]["default"] == 10.0
    assert "inf" in churn["properties"]["S_tmax"]["description"]    # JSON has no inf


@pytest.mark.parametrize("name", sorted(packaged_suites()))
def test_every_shipped_suite_satisfies_the_schema(validator, plugins, name):
    raw = read_toml(packaged_suites()[name])
    assert schema_errors(validator, raw) == []
    build_suite(raw, plugins)


def test_the_documented_example_is_a_valid_suite(validator, plugins):
    raw = tomllib.loads(docstring_example())
    assert raw["samplers"]["langevin"]["params"]["S_churn"] == [0.0, 10.0]
    assert schema_errors(validator, raw) == []
    suite = build_suite(raw, plugins)
    assert suite.metrics == {"nll": {"num_points": 64}}


GOOD = [
    {"samplers": {"langevin": {"params": {"S_churn": [0, 5.5], "S_noise": 1.003}}}},
    {"steps": None, "nfe": 10},
    {"steps": None, "samplers": {"euler": {"steps": 3}, "heun": {"nfe": [5, 9]}}},
    {"seeds": 3, "threads": 2, "device": "cuda:1", "dtype": "float64",
     "network_dtype": "bf16", "compile": True},
    {"model_options": {"sde": "ve"}, "metrics": {"mmd_oracle": {"bandwidth": 0.5}}},
    {"metrics": {"sliced_wasserstein": {"num_projections": 64}}},
    {"schedule": ["karras", "log_snr"]},
    {"schedule": {"name": "karras", "rho": 5.0}},
    {"schedule": [{"name": "sigma_list", "sigmas": [80.0, 1.0, 0.1]}, "ddim_quadratic"],
     "rank_across_schedules": True},
]

BROKEN = [
    {"num_sample": 5},
    {"model": "gmm-ring"},
    {"samplers": {}},
    {"samplers": {"heunn": {}}},
    {"samplers": {"heun": {"stepz": [1]}}},
    {"samplers": {"langevin": {"params": {"S_chrun": 1.0}}}},
    {"samplers": {"langevin": {"params": {"S_churn": [1.0, -1.0]}}}},
    {"samplers": {"langevin": {"params": {"S_churn": []}}}},
    {"samplers": {"predictor_corrector": {"params": {"predictor": "ddim"}}}},
    {"samplers": {"predictor_corrector": {"params": {"n_corrector_steps": 1.5}}}},
    {"samplers": {"euler_maruyama": {"params": {"keep_final_noise": 1}}}},
    {"samplers": {"heun": {"steps": [2], "nfe": [3]}}},
    {"samplers": {"heun": {"params": {"S_churn": 1.0}}}},
    {"model_options": {"sdee": "vp"}},
    {"metrics": {"fidd": {}}},
    {"metrics": {"sliced_wasserstein": {"num_projection": 8}}},
    {"schedule": "karas"},
    {"schedule": []},
    {"schedule": ["karras", 3]},
    {"schedule": {"name": "karras", "rho": -1.0}},
    {"schedule": {"name": "karras", "roh": 5.0}},
    {"schedule": {"rho": 5.0}},
    {"schedule": {"name": "sigma_list", "sigmas": ["x"]}},
    {"rank_across_schedules": "yes"},
    {"steps": [0, 4]},
    {"steps": [MAX_STEPS + 1]},
    {"steps": []},
    {"nfe": [10]},
    {"steps": None},
    {"num_samples": MAX_NUM_SAMPLES + 1},
    {"num_samples": 2.5},
    {"batch_size": 0},
    {"seeds": [0, -1]},
    {"device": "tpu"},
    {"dtype": "bf16"},
    {"network_dtype": "int8"},
    {"compile": "yes"},
    {"threads": 0},
    {"description": 3},
]


def with_change(change: dict) -> dict:
    raw = dict(BASE, **change)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize("change", GOOD, ids=lambda c: ",".join(c))
def test_valid_variations_pass_both_checks(validator, plugins, change):
    raw = with_change(change)
    assert schema_errors(validator, raw) == []
    build_suite(raw, plugins)


@pytest.mark.parametrize("change", BROKEN, ids=lambda c: json.dumps(c)[:40])
def test_broken_suites_fail_both_checks(validator, plugins, change):
    raw = with_change(change)
    assert schema_errors(validator, raw), f"the schema accepts {change}"
    with pytest.raises(SuiteError):
        build_suite(raw, plugins)


def test_harness_schema_prints_or_writes_the_schema(plugins, tmp_path, capsys):
    assert harness("schema") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(suite_json_schema(plugins)))
    out = tmp_path / "suite.schema.json"
    assert harness("schema", "--out", str(out)) == 0
    assert json.loads(out.read_text()) == printed
    assert [p.name for p in tmp_path.iterdir()] == [out.name]    # no temporary left


def test_harness_schema_into_a_missing_folder_is_a_clean_error(tmp_path, capsys):
    assert harness("schema", "--out", str(tmp_path / "no" / "such.json")) == 2
    assert "cannot write" in capsys.readouterr().err
