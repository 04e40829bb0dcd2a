"""The conformance kit gives every check its verdict: a sampler without a docstring gets a
warning of its own and every other check still runs; one without a citation fails
`documentation` alone; one the harness cannot call has every other check skipped, each
saying why, instead of missing from the report."""

from __future__ import annotations

import importlib

import pytest

from harness import Capabilities, Sampler
from harness.commands.plugins import describe, format_text
from harness.plugin.manager import load_plugins
from harness.testing import CHECKS, check_sampler, conformance_test
from harness_plugins.euler import euler


def _no_docstring_sampler() -> Sampler:
    plugin = importlib.import_module("tests.plugins.no_docstring")
    loaded = load_plugins(entry_points=[], extra=[("no_docstring", plugin)])
    assert not loaded.failures, loaded.failures
    return loaded.samplers.get("no_docstring")


def test_a_missing_docstring_is_a_warning_and_every_check_still_runs():
    report = check_sampler(_no_docstring_sampler())          # raises if any check fails
    assert [r.name for r in report.results] == list(CHECKS)
    statuses = {r.name: r.status for r in report.results}
    assert statuses.pop("documentation") == "warning"
    assert set(statuses.values()) == {"passed"}, str(report)
    assert "has no docstring" in report.result("documentation").message
    assert "warning documentation" in str(report)


def test_the_pytest_helper_puts_the_warning_where_pytest_shows_it():
    sampler = _no_docstring_sampler()
    case = conformance_test(sampler, checks=["registration", "documentation"])
    with pytest.warns(UserWarning, match=r"sampler 'no_docstring': \[documentation\] the "
                                         r"sampler function has no docstring"):
        case(sampler)  # what pytest calls for the one parametrised case


def test_a_missing_citation_fails_documentation_only():
    sampler = Sampler(name="uncited", fn=euler, citation="",
                      capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1,
                                                pf_ode=True))
    report = check_sampler(sampler, checks=["registration", "documentation", "output", "nfe"],
                           raise_on_failure=False)
    assert [(r.name, r.status) for r in report.results] == [
        ("registration", "passed"), ("documentation", "failed"), ("output", "passed"),
        ("nfe", "passed")]
    assert report.result("documentation").message.startswith("no citation")


def not_callable_as_a_sampler(model, x):
    """Takes two arguments where the contract passes six."""
    return x


def test_a_sampler_the_harness_cannot_call_has_every_other_check_skipped():
    sampler = Sampler(name="two_args", fn=not_callable_as_a_sampler, citation="a test",
                      capabilities=Capabilities(stochastic=False, order=1, nfe_per_step=1))
    report = check_sampler(sampler, raise_on_failure=False)
    assert [r.name for r in report.results] == list(CHECKS)
    assert [r.name for r in report.failures] == ["registration"]
    skipped = [r for r in report.results[1:]]
    assert all(r.status == "skipped" and "see registration" in r.message for r in skipped)


def test_harness_plugins_text_shows_each_summary_and_nothing_for_a_missing_one():
    loaded = load_plugins(entry_points=[], extra=[
        ("euler", importlib.import_module("harness_plugins.euler")),
        ("no_docstring", importlib.import_module("tests.plugins.no_docstring"))])
    lines = format_text(describe(loaded)).splitlines()
    euler_at = next(i for i, line in enumerate(lines) if line.startswith("  euler "))
    assert lines[euler_at + 1].strip() == euler.__doc__.strip().splitlines()[0]
    bare_at = next(i for i, line in enumerate(lines) if line.startswith("  no_docstring "))
    assert lines[bare_at + 1].strip().startswith("from tests.plugins.no_docstring")
