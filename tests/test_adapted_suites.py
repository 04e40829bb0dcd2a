"""Adapted samplers in suites: what a suite may set, and which code a result depends on."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from harness.bench.running.runner import portable_file_name
from harness.bench.configuration.suite import SuiteError, build_suite, model_identity, resolve_trials

ADAPTED = [("kdiffusion:euler", "k-diffusion", "s_churn"),
           ("diffusers:DDIMScheduler", "diffusers", "trained_betas")]


def adapted(plugins, name):
    if name not in plugins.samplers:
        pytest.skip(f"{name}: its library is not installed")


def hashes(plugins, sampler):
    suite = build_suite({"model": "gmm-ring-2d", "samplers": {sampler: {}, "euler": {}},
                         "steps": [4], "num_samples": 8, "seeds": [0]}, plugins)
    model = plugins.models.get(suite.model).build("cpu")
    trials = resolve_trials(suite, plugins, model_identity(suite, model), True, model.sde)
    return {t.sampler: t.config_hash for t in trials}


@pytest.mark.parametrize("sampler, library, _", ADAPTED)
def test_upgrading_the_adapted_library_runs_its_trials_again_on_resume(
        plugins, monkeypatch, sampler, library, _):
    adapted(plugins, sampler)
    before = hashes(plugins, sampler)
    installed = importlib.metadata.version

    def upgraded(distribution):
        version = installed(distribution)
        return version + ".post99" if distribution == library else version

    monkeypatch.setattr(importlib.metadata, "version", upgraded)
    after = hashes(plugins, sampler)
    assert after[sampler] != before[sampler]
    assert after["euler"] == before["euler"]  # a built-in does not run the library


@pytest.mark.parametrize("sampler, _, set_by_harness", ADAPTED)
def test_a_suite_setting_what_the_harness_sets_is_told_why(plugins, sampler, _,
                                                           set_by_harness):
    adapted(plugins, sampler)
    with pytest.raises(SuiteError) as err:
        build_suite({"model": "gmm-ring-2d", "steps": [4], "num_samples": 8,
                     "samplers": {sampler: {"params": {set_by_harness: 1.0}}}}, plugins)
    message = str(err.value)
    assert f"samplers.{sampler}.params: parameter {set_by_harness!r}" in message
    assert "unknown" not in message


@pytest.mark.parametrize("sampler, why", [
    ("diffusers:FlowMatchEulerDiscreteScheduler", "a flow-matching"),
    ("kdiffusion:dpm_adaptive", "adaptive step size")])
def test_a_suite_asking_for_what_was_not_adapted_is_told_why(plugins, sampler, why):
    library = sampler.split(":")[0]
    if not any(name.startswith(f"{library}:") for name in plugins.samplers.names()):
        pytest.skip(f"{library} is not installed")
    with pytest.raises(SuiteError) as err:
        build_suite({"model": "gmm-ring-2d", "steps": [4], "num_samples": 8,
                     "samplers": {sampler: {}}}, plugins)
    name = sampler.split(":")[1]
    assert f"{library}'s {name} is not adapted: {why}" in str(err.value)


def test_every_adapted_trials_sample_grid_has_a_file_name_windows_accepts(plugins):
    # An adapted sampler's trial is named `library:name-...`; a file of that name cannot
    # be checked out on Windows (results/ecosystem/samples/ holds them).
    forbidden = set('<>:"/\\|?*')
    names = [f"{sampler}-6nfe-seed0" for sampler in plugins.samplers.names()]
    for name in names:
        assert not forbidden & set(portable_file_name(name)), name
    assert portable_file_name("kdiffusion:euler-S_churn=10-6nfe-seed0") == \
        "kdiffusion_euler-S_churn=10-6nfe-seed0"
    committed = Path(__file__).parents[1] / "results"
    assert not [p for p in committed.rglob("*") if forbidden & set(p.name)]
