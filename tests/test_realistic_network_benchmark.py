"""`benchmarks/realistic_network.py` at its CPU dry-run size: its table has a row per
built-in sampler, with the NFE counted at the model equal to the sampler's declared NFE
and physically possible times, and ours and k-diffusion's loops agree from the same x_T.

The timings of a CPU dry run on a shared machine are no test: only their structure is
checked (positive, finite). The network is the `--tiny` one (the same layout, narrow).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from harness.plugin.manager import get_plugins
from harness_plugins import kdiffusion_loading

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "realistic_network.py"
STEPS = 2


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("realistic_network", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("realnet")
    module.main(["--device", "cpu", "--batch", "2", "--steps", str(STEPS), "--modes",
                 "fp32:no", "--tiny", "--markdown", str(out / "table.md"), "--json",
                 str(out / "result.json")])
    return (json.loads((out / "result.json").read_text()),
            (out / "table.md").read_text())


def test_one_row_per_builtin_sampler_with_its_declared_nfe(result):
    data, table = result
    builtins = sorted(n for n in get_plugins().samplers.names() if ":" not in n)
    (mode,) = data["modes"]
    assert sorted(r["sampler"] for r in mode["samplers"]) == builtins
    for row in mode["samplers"]:
        assert row["nfe"] == row["nfe_declared"], row
        assert row["nfe_calls"] == row["nfe_declared"]  # batch 2 in one call per step
        assert f"| {row['sampler']} | {row['nfe']:g} ({row['nfe_declared']}) |" in table


def test_times_are_physically_possible(result):
    data, _ = result
    for row in data["modes"][0]["samplers"]:
        assert row["finite"], row
        for key in ("wall_s", "bare_network_s", "network_inside_s", "overhead",
                    "samples_per_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        # The time inside the run's own network calls is a part of the run.
        assert row["network_inside_s"] <= row["wall_s"], row
        assert row["samples_per_s"] == pytest.approx(2 / row["wall_s"])


def test_ours_and_k_diffusion_agree_from_the_same_x_T(result):
    data, table = result
    if kdiffusion_loading.source() is None:
        assert not data["modes"][0]["kdiffusion"] and "not installed" in data["kdiffusion"]
        pytest.skip("k-diffusion is not installed: the comparison is left out")
    pairs = data["modes"][0]["kdiffusion"]
    assert [p["kdiffusion"] for p in pairs] == ["sample_euler", "sample_heun",
                                                "sample_dpmpp_2m"]
    for pair in pairs:
        assert pair["max_relative_difference"] < 1e-3, pair
        assert pair["ratio"] > 0 and f"| {pair['case']} |" in table
