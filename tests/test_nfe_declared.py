"""NFE budgets that give what samplers really spend, and a flag when a sampler's counted
NFE is not what it declares."""

from __future__ import annotations

import json

import pytest

from harness.bench.configuration.suite import steps_for_budget
from harness.core.sde import VESDE, EDMSDE
from harness.plugin import manager as plugin_manager
from harness.plugin.manager import get_sampler
from tests.bench_support import harness, write_suite
from tests.plugins import nfe_plugins


def test_ve_has_no_free_last_step_so_budgets_count_every_evaluation():
    """Under VE sigma(0) = sigma_min > 0: Heun's last step is a full Heun step (2 NFE),
    so a budget of 10 is 5 steps at 10 NFE, where sigma(0) = 0 gives 5 steps at 9."""
    assert float(VESDE().sigma(0.0)) > 0 and float(EDMSDE().sigma(0.0)) == 0
    heun = get_sampler("heun")
    params = heun.make_params()
    assert steps_for_budget(heun, params, 10, final_sigma_zero=False) == 5
    assert heun.expected_nfe(5, params, final_sigma_zero=False) == 10
    assert heun.expected_nfe(5, params, final_sigma_zero=True) == 9


@pytest.mark.parametrize("sde", ["ve", "edm"])
def test_heun_spends_what_its_trial_declares_under_every_process(sde, monkeypatch,
                                                                   tmp_path):
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path / "s.toml", f"""
experiment = "nfe"
model = "gmm-ring-2d"
nfe = [10]
seeds = [0]
num_samples = 8
batch_size = 8
device = "cpu"
[model_options]
sde = "{sde}"
[samplers.heun]
""")
    assert harness("run", suite, "--quiet", "--tracking-uri", "sqlite:///m.db") == 0
    (line,) = [json.loads(x) for x in (tmp_path / "runs/nfe/trials.jsonl").open()
               if '"kind": "trial"' in x and '"floor": true' not in x]
    assert line["metrics"]["nfe"] == line["nfe_expected"] == (10 if sde == "ve" else 9)
    assert line["warnings"] == []


def test_a_sampler_spending_more_than_it_declares_is_flagged_not_failed(
        monkeypatch, tmp_path, capsys):
    loaded = plugin_manager.load_plugins(extra=[("nfe_plugins", nfe_plugins)])
    monkeypatch.setattr(plugin_manager, "_default", loaded)
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path / "s.toml", """
experiment = "nfe"
model = "gmm-ring-2d"
steps = [4]
seeds = [0]
num_samples = 8
batch_size = 8
device = "cpu"
[samplers.underdeclared_euler]
""")
    assert harness("run", suite, "--quiet", "--tracking-uri", "sqlite:///m.db") == 0
    err = capsys.readouterr().err
    assert "underdeclared_euler-4nfe-seed0: nfe_mismatch: counted 5" in err
    (line,) = [json.loads(x) for x in (tmp_path / "runs/nfe/trials.jsonl").open()
               if '"kind": "trial"' in x and '"floor": true' not in x]
    assert line["status"] == "FINISHED"
    assert line["metrics"]["nfe"] == 5 and line["nfe_expected"] == 4
    assert line["warnings"] and line["warnings"][0].startswith("nfe_mismatch")
    board = (tmp_path / "runs/nfe/leaderboard.md").read_text()
    assert "(declared 4) !" in board
