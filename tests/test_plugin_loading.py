"""Loading plugins: broken ones are reported clearly and the others still load; plugins
can be disabled by name and hook calls traced; `harness plugins` shows where each
sampler comes from.
"""

from __future__ import annotations

import importlib.metadata
import json
import types
from types import SimpleNamespace

import pytest

from harness import Capabilities, Sampler, UnknownNameError, hookimpl
from harness.plugin import manager as plugin_manager
from harness.cli import main
from harness.commands.plugins import describe, format_text
from harness.plugin.manager import DISABLE_ENV, TRACE_ENV, load_plugins

from tests.plugins import example_plugin

BUILTIN_SAMPLERS = {"euler", "euler_maruyama", "heun", "lambda_sde", "langevin",
                    "predictor_corrector", "ddim", "ddim_eta", "euler_ancestral",
                    "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "ipndm", "deis",
                    "restart"}
#: Built-in samplers registered by a plugin module of another name.
PLUGIN_OF = {"ddim_eta": "ddim", "dpmpp_2m": "dpm_solver_pp", "dpmpp_3m": "dpm_solver_pp",
             "dpmpp_2m_sde": "dpm_solver_pp_sde"}


def installed():
    return list(importlib.metadata.entry_points(group="harness"))


def test_plugin(module: str, name: str | None = None) -> importlib.metadata.EntryPoint:
    """An entry point for a module of tests/plugins, as a distribution would declare it."""
    return importlib.metadata.EntryPoint(name or module, f"tests.plugins.{module}", "harness")


test_plugin.__test__ = False  # a helper, not a test


@pytest.fixture
def clean_env(monkeypatch):
    """No plugin disabled or traced, a fresh `get_plugins()`; all restored afterwards.

    `harness.cli.main` writes its options into the environment and `get_plugins` caches
    per process, so both are saved and restored around each test.
    """
    monkeypatch.setenv(DISABLE_ENV, "")
    monkeypatch.setenv(TRACE_ENV, "")
    monkeypatch.setattr(plugin_manager, "_default", None)


BROKEN = [
    ("raises_on_import", "import",
     "ModuleNotFoundError: No module named 'harness_no_such_dependency'"),
    ("wrong_signature", "hook-spec",
     "Argument(s) {'registry'} are declared in the hookimpl but can not be found in the "
     "hookspec"),
    ("future_api_version", "api-version",
     "written for harness API version 2, but this harness provides version 1; install a "
     "harness release for API 2 or update the plugin"),
    ("raises_in_register", "register", "RuntimeError: configuration file not found"),
]


@pytest.mark.parametrize("module, stage, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_plugin_is_reported_and_the_others_load(clean_env, module, stage, message):
    loaded = load_plugins(entry_points=installed() + [test_plugin(module)])
    (failure,) = loaded.failures
    assert (failure.plugin, failure.stage) == (module, stage)
    assert message in failure.message
    assert f"plugin {module!r} failed at {stage}: " in str(failure)
    assert BUILTIN_SAMPLERS <= set(loaded.samplers.names())
    # Nothing of a failed plugin is kept, not even what it registered before raising.
    assert "half_registered" not in loaded.samplers and "euler_v2" not in loaded.samplers


def test_a_duplicate_sampler_name_is_refused_naming_the_first_owner(clean_env):
    loaded = load_plugins(entry_points=installed() + [test_plugin("duplicate_name",
                                                                  "third_party")])
    (failure,) = loaded.failures
    assert (failure.plugin, failure.stage) == ("third_party", "register")
    assert failure.message == ("PluginError: sampler 'euler' is already registered by "
                               "harness_plugins.euler (diffusion-sampler-harness "
                               f"{importlib.metadata.version('diffusion-sampler-harness')})")
    assert loaded.samplers.origin("euler").module == "harness_plugins.euler"
    assert BUILTIN_SAMPLERS <= set(loaded.samplers.names())


def test_a_duplicate_never_displaces_a_builtin(clean_env):
    loaded = load_plugins(entry_points=installed() + [test_plugin("duplicate_name",
                                                                  "a_third_party")])
    assert [f.plugin for f in loaded.failures] == ["a_third_party"]
    assert loaded.samplers.origin("euler").module == "harness_plugins.euler"


def test_a_plugin_that_states_no_api_version_loads_as_current(clean_env):
    plugin = types.ModuleType("no_version_stated")

    @hookimpl
    def harness_register_samplers(register):
        register(Sampler(name="unversioned", fn=lambda *args: args[1],
                         capabilities=Capabilities(stochastic=False, order=1)))

    plugin.harness_register_samplers = harness_register_samplers
    loaded = load_plugins(entry_points=[], extra=[("no_version_stated", plugin)])
    assert not loaded.failures and loaded.samplers.names() == ["unversioned"]


# --- disabling and tracing ------------------------------------------------------------

def test_disable_by_environment_variable(clean_env, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "euler, heun")
    loaded = load_plugins()
    assert loaded.disabled == ["euler", "heun"]
    written_here = {name for name in loaded.samplers.names() if ":" not in name}
    assert written_here == BUILTIN_SAMPLERS - {"euler", "heun"}  # adapted ones aside


def test_disabling_a_broken_plugin_silences_it(clean_env):
    loaded = load_plugins(entry_points=installed() + [test_plugin("raises_on_import")],
                          disabled=["raises_on_import"])
    assert not loaded.failures and loaded.disabled == ["raises_on_import"]


def test_disable_by_cli_option(clean_env, capsys):
    code = main(["--disable-plugin", "euler", "--disable-plugin", "langevin",
                 "plugins", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0
    assert info["disabled"] == ["euler", "langevin"]
    names = {s["name"] for s in info["samplers"]}
    assert "euler" not in names and "langevin" not in names and "heun" in names


def test_trace_hooks_by_environment_variable(clean_env, monkeypatch, capsys):
    monkeypatch.setenv(TRACE_ENV, "1")
    load_plugins(entry_points=[e for e in installed() if e.name == "euler"])
    err = capsys.readouterr().err
    assert "harness_register_samplers" in err and "harness_register_models" in err


def test_trace_hooks_by_cli_option(clean_env, capsys):
    assert main(["--trace-hooks", "plugins"]) == 0
    captured = capsys.readouterr()
    assert "harness_register_samplers" in captured.err
    assert "Samplers (" in captured.out
    assert "harness_register_samplers" not in captured.out


def test_without_tracing_nothing_is_printed(clean_env, capsys):
    load_plugins()
    assert capsys.readouterr().err == ""


# --- `harness plugins` ------------------------------------------------------------------

def test_harness_plugins_json_lists_samplers_with_origin_and_capabilities(clean_env, capsys):
    assert main(["plugins", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    samplers = {s["name"]: s for s in info["samplers"]}
    assert BUILTIN_SAMPLERS <= set(samplers)
    version = importlib.metadata.version("diffusion-sampler-harness")
    for name in BUILTIN_SAMPLERS:
        plugin = PLUGIN_OF.get(name, name)
        assert samplers[name]["origin"] == {
            "plugin": plugin, "module": f"harness_plugins.{plugin}",
            "distribution": "diffusion-sampler-harness", "version": version}
    assert samplers["heun"]["capabilities"] == {
        "stochastic": False, "order": 2, "nfe_per_step": 2, "final_step_nfe": 1,
        "extra_nfe": 0, "pf_ode": True}
    assert samplers["restart"]["capabilities"]["extra_nfe"] == 8
    assert {p["name"] for p in samplers["langevin"]["params"]} == {
        "S_churn", "S_tmin", "S_tmax", "S_noise"}
    assert info["failures"] == []


def test_harness_plugins_text(clean_env, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    version = importlib.metadata.version("diffusion-sampler-harness")
    assert "heun                   deterministic, order 2, 2 NFE/step (1 on the last), " \
           "PF-ODE" in out
    assert f"from harness_plugins.heun  [diffusion-sampler-harness {version}]" in out
    assert "restart                stochastic, order 0 (fixed bias), 2 NFE/step (1 on the " \
           "last) + 8 per run" in out


def third_party_entry_point():
    """The example plugin as if installed: an entry point with a distribution."""
    dist = SimpleNamespace(metadata={"Name": "harness-dpmsolver"}, version="0.1.0")
    return SimpleNamespace(name="dpmsolver", value="harness_dpmsolver", dist=dist,
                           load=example_plugin)


def test_harness_plugins_shows_a_third_party_distribution_and_version(clean_env, monkeypatch,
                                                                      capsys):
    loaded = load_plugins(entry_points=installed() + [third_party_entry_point()])
    monkeypatch.setattr(plugin_manager, "_default", loaded)
    assert main(["plugins", "--json"]) == 0
    samplers = {s["name"]: s for s in json.loads(capsys.readouterr().out)["samplers"]}
    assert samplers["example_dpmpp_2m"]["origin"] == {
        "plugin": "dpmsolver", "module": "harness_dpmsolver",
        "distribution": "harness-dpmsolver", "version": "0.1.0"}
    assert samplers["example_dpmpp_2m"]["capabilities"]["order"] == 2
    text = format_text(describe(loaded))
    assert "example_dpmpp_2m       deterministic, order 2, 1 NFE/step" in text
    assert "from harness_dpmsolver  [harness-dpmsolver 0.1.0]" in text


def test_harness_plugins_reports_failures_and_exits_nonzero(clean_env, monkeypatch, capsys):
    loaded = load_plugins(entry_points=installed() + [test_plugin("future_api_version")])
    monkeypatch.setattr(plugin_manager, "_default", loaded)
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "Failed plugins (1):" in out
    assert "future_api_version (api-version): written for harness API version 2" in out


def test_unknown_sampler_is_refused_with_the_list_and_a_close_match(clean_env):
    samplers = load_plugins().samplers
    with pytest.raises(UnknownNameError) as caught:
        samplers.get("huen")
    message = str(caught.value)
    assert message.startswith("unknown sampler 'huen'. Did you mean 'heun'?")
    assert "Available: " + ", ".join(sorted(samplers.names())) in message


# --- diagnostics: what `harness run` says about plugins that did not load --------------------

def _api_module(value):
    module = types.ModuleType(f"api_{type(value).__name__}")
    module.harness_api_version = value
    return module


@pytest.mark.parametrize("value, message", [
    ("1", "harness_api_version must be an integer (this harness provides 1), got str '1'; "
          "write harness_api_version = 1 if the plugin is written for it"),
    (1.0, "harness_api_version must be an integer (this harness provides 1), got float 1.0; "
          "write harness_api_version = 1 if the plugin is written for it"),
    (True, "harness_api_version must be an integer (this harness provides 1), got bool "
           "True; write harness_api_version = 1 if the plugin is written for it"),
    (None, "harness_api_version must be an integer (this harness provides 1), got NoneType "
           "None; write harness_api_version = 1 if the plugin is written for it"),
    (0, "written for harness API version 0, but this harness provides version 1; install "
        "a harness release for API 0 or update the plugin")])
def test_the_api_version_message_is_right_for_every_type(clean_env, value, message):
    (failure,) = load_plugins(entry_points=[], extra=[("odd", _api_module(value))]).failures
    assert (failure.stage, failure.message) == ("api-version", message)


def test_unknown_sampler_names_the_failed_plugin_that_provides_it(clean_env):
    loaded = load_plugins(entry_points=installed() + [test_plugin("raises_in_register")])
    with pytest.raises(UnknownNameError) as caught:
        loaded.samplers.get("half_registered")
    assert str(caught.value).endswith(
        "Plugin 'raises_in_register', which provides sampler 'half_registered', failed to "
        "load at register: RuntimeError: configuration file not found")


def test_unknown_sampler_lists_failed_plugins_whose_names_are_unknown(clean_env):
    loaded = load_plugins(entry_points=installed() + [test_plugin("future_api_version"),
                                                      test_plugin("raises_on_import")])
    with pytest.raises(UnknownNameError) as caught:
        loaded.samplers.get("euler_v2")
    message = str(caught.value)
    assert message.startswith("unknown sampler 'euler_v2'.")
    assert ("2 plugin(s) failed to load and may provide it: 'future_api_version' (at "
            "api-version: written for harness API version 2" in message)
    assert "'raises_on_import' (at import: ModuleNotFoundError" in message
    assert "\n" not in message


def test_harness_run_prints_one_line_per_failed_plugin(clean_env, monkeypatch, capsys,
                                                       tmp_path):
    loaded = load_plugins(entry_points=installed() + [test_plugin("raises_in_register"),
                                                      test_plugin("raises_on_import")])
    monkeypatch.setattr(plugin_manager, "_default", loaded)
    suite = tmp_path / "s.toml"
    suite.write_text('model = "gmm-ring-2d"\nsteps = [2]\nnum_samples = 8\n'
                     '[samplers.half_registered]\n')
    assert main(["run", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert sorted(err[:2]) == [
        "warning: plugin 'raises_in_register' failed at register: RuntimeError: "
        "configuration file not found",
        "warning: plugin 'raises_on_import' failed at import: ModuleNotFoundError: No module "
        "named 'harness_no_such_dependency'"]
    assert err[2].startswith("error: suite ") and err[2].endswith(
        "Plugin 'raises_in_register', which provides sampler 'half_registered', failed to "
        "load at register: RuntimeError: configuration file not found")
    assert len(err) == 3
