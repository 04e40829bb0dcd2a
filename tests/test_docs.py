"""The plugin author's guide (docs/plugins.md) stays true to the code.

Every hook in `harness/hookspecs.py` is documented with its arguments, in the guide and
with a `:param:` line and its calling contract in its docstring (and nothing else is
documented as a hook); the minimal plugin is under 40 lines and really works: it is
written to disk, loaded through its entry point and passes the conformance kit; the
quoted messages, options and defaults are the ones the code has.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import sys
from pathlib import Path

import pytest

from harness import hookspecs
from harness.cli import build_parser
from harness.plugin.manager import DISABLE_ENV, TRACE_ENV, load_plugins
import harness
import harness.metrics
from harness.testing import (
    CHECKS,
    METRIC_CHECKS,
    MOMENT_Z,
    SW_MARGIN,
    check_metric,
    check_sampler,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def hooks() -> dict[str, list[str]]:
    """Every hook specification: name -> argument names."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: list(inspect.signature(fn).parameters)
            for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, marker)}


def test_there_are_hooks_to_document():
    assert "harness_register_samplers" in hooks()


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_documented_with_its_arguments(guide, name):
    reference = section(guide, "## Hook reference")
    arguments = hooks()[name]
    heading = f"### `{name}({', '.join(arguments)})`"
    assert heading + "\n" in reference, f"docs/plugins.md documents no hook {heading!r}"
    body = section(reference, heading)
    for argument in arguments:
        assert f"`{argument}(" in body or f"`{argument}`" in body, (
            f"the reference of {name} does not explain its argument {argument!r}")


#: What every hook's docstring must say, in pytest's style: phrase -> what it tells.
CALLING_CONTRACT = {
    "Called ": "when the hook is called",
    "once per": "how often",
    "torchrun": "on which processes under torchrun",
    "first result": "whether the first result wins",
}


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_argument_has_a_param_line(name):
    """Like pytest's hookspec.py: one `:param name:` line per argument, none for others."""
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    documented = re.findall(r"^:param (\w+):", doc, flags=re.MULTILINE)
    missing = [a for a in hooks()[name] if a not in documented]
    assert not missing, f"hookspecs.{name} has no :param: line for {missing}"
    extra = [a for a in documented if a not in hooks()[name]]
    assert not extra, f"hookspecs.{name} documents arguments it does not have: {extra}"


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_states_its_calling_contract(name):
    doc = " ".join((inspect.getdoc(getattr(hookspecs, name)) or "").split())
    untold = [what for phrase, what in CALLING_CONTRACT.items() if phrase not in doc]
    assert not untold, f"hookspecs.{name}'s docstring does not say {', '.join(untold)}"


def test_nothing_else_is_documented_as_a_hook(guide):
    documented = re.findall(r"^### `(\w+)\(", section(guide, "## Hook reference"),
                            flags=re.MULTILINE)
    assert sorted(documented) == sorted(hooks())


def minimal_plugin(guide: str) -> tuple[str, str]:
    text = section(guide, "## A minimal plugin")
    (toml,), (python,) = code_blocks(text, "toml"), code_blocks(text, "python")
    return toml, python


def test_minimal_plugin_is_under_40_lines(guide):
    toml, python = minimal_plugin(guide)
    lines = len(toml.splitlines()) + len(python.splitlines())
    assert lines < 40, f"the minimal plugin has {lines} lines"


def test_minimal_plugin_loads_through_its_entry_point_and_passes_the_kit(
        guide, tmp_path, monkeypatch):
    toml, python = minimal_plugin(guide)
    project = tomllib.loads(toml)["project"]
    ((plugin, module),) = project["entry-points"]["harness"].items()
    (tmp_path / f"{module}.py").write_text(python)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_point = importlib.metadata.EntryPoint(plugin, module, "harness")

    loaded = load_plugins(entry_points=[entry_point])
    assert not loaded.failures, loaded.failures
    (name,) = loaded.samplers.names()
    assert loaded.samplers.origin(name).module == module
    report = check_sampler(loaded.samplers.get(name))
    assert report.passed and len(report.results) == len(CHECKS)


def test_install_lines_are_the_harness_then_the_example_plugin(guide):
    (block,) = code_blocks(section(guide, "## Installing the harness and a plugin"), "sh")
    installs = [line.split("#")[0].split() for line in block.splitlines()
                if line.startswith("pip install")]
    assert installs == [["pip", "install", "."],
                        ["pip", "install", "./examples/harness-dpmsolver"]]
    example = tomllib.loads((ROOT / "examples/harness-dpmsolver/pyproject.toml").read_text())
    assert example["project"]["name"] == "harness-dpmsolver"
    assert "harness" in example["project"]["entry-points"]
    harness = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert any(d.startswith(harness) for d in example["project"]["dependencies"])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_quoted_api_version_refusal_is_the_loaders(guide):
    entry_point = importlib.metadata.EntryPoint(
        "future_api_version", "tests.plugins.future_api_version", "harness")
    (failure,) = load_plugins(entry_points=[entry_point]).failures
    assert failure.stage == "api-version"
    assert f"`{failure.message}`" in flat(section(guide, "## Versioning policy"))
    assert f"currently {hookspecs.HARNESS_API_VERSION}" in guide


def test_disabling_and_tracing_options_exist(guide):
    text = section(guide, "## Disabling plugins and tracing hook calls")
    options = {s for action in build_parser()._actions for s in action.option_strings}
    for name in (DISABLE_ENV, TRACE_ENV, "--disable-plugin", "--trace-hooks"):
        assert name in text
    assert {"--disable-plugin", "--trace-hooks"} <= options


def test_the_kit_section_lists_every_check_and_the_real_defaults(guide):
    text = flat(section(guide, "## Running the conformance kit"))
    documented = re.findall(r"^\| `(\w+)` \|", section(guide, "## Running the conformance kit"),
                            flags=re.MULTILINE)
    assert documented == list(CHECKS)
    for name, parameter in inspect.signature(check_sampler).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            shown = repr(parameter.default).replace("'", '"')
            assert f"{name}={shown}" in text, f"check_sampler's default {name}={shown}"
    assert f"within {MOMENT_Z} standard errors" in text
    assert f"within {SW_MARGIN:.0%} of the exact-vs-exact floor" in text


def test_the_metric_kit_section_lists_every_check_and_the_real_defaults(guide):
    text = section(guide, "### Checking a metric")
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)
    assert documented == list(METRIC_CHECKS)
    for name, parameter in inspect.signature(check_metric).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            assert f"{name}={parameter.default!r}" in flat(text), name


def test_the_quoted_metric_kit_message_is_the_kits(guide):
    from tests.plugins.broken_metrics import UnkeyedValues

    report = check_metric(UnkeyedValues, checks=["values"], raise_on_failure=False)
    text = flat(section(guide, "### Checking a metric"))
    quoted = re.search(r"e\.g\. `\[values\] (.*?)`", text)
    assert quoted and report.result("values").message.startswith(quoted.group(1))


def test_the_sharding_helpers_are_public(guide):
    text = section(guide, "### Sharding under torchrun")
    named = re.findall(r"^\| `(\w+)\(", text, flags=re.MULTILINE)
    assert named == ["local_rows", "all_reduce_sum", "gather_concat", "shared_failure"]
    for name in named + ["world_size"]:
        assert name in harness.__all__, name
    for name in ("sharded_fid", "sharded_nll"):  # back-ends, in the metrics namespace
        assert name in harness.metrics.__all__, name


def test_the_quoted_metric_code_is_the_examples(guide):
    (code,) = code_blocks(section(guide, "### The example metric plugin"), "python")
    source = (ROOT / "examples/harness-energy/src/harness_energy/__init__.py").read_text()
    assert code in source, "docs/plugins.md quotes compute() other than the example has it"
    (block,) = code_blocks(section(guide, "### The example metric plugin"), "sh")
    assert block.splitlines()[0].split("#")[0].split() == [
        "pip", "install", "./examples/harness-energy"]
    example = tomllib.loads((ROOT / "examples/harness-energy/pyproject.toml").read_text())
    assert example["project"]["name"] == "harness-energy"
    assert example["project"]["entry-points"]["harness"] == {"energy": "harness_energy"}


def test_readme_links_the_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()
