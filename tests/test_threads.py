"""`threads`: set before the model loads, logged with every run, never in a config hash.

The thread count changes how fast a result comes, not the result: the same trials get
the same configuration hashes and the shipped network gives the same samples with 1 and
2 threads, to float32 rounding.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness import generate, make_grid
from harness.bench.configuration.suite import (MAX_THREADS, SuiteError, build_suite, default_threads,
                                 model_identity, resolve_trials)
from tests.bench_support import TINY_SUITE, bench_environment, harness, write_suite

BASE = {"model": "gmm-ring-2d", "samplers": {"euler": {}, "heun": {}}, "steps": [4, 8],
        "num_samples": 16}


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


@pytest.fixture
def one_thread_after():
    yield
    torch.set_num_threads(1)     # what conftest set for every test


def test_the_thread_count_is_in_no_configuration_hash(plugins):
    def hashes(threads: int) -> list[str]:
        suite = build_suite(dict(BASE, threads=threads), plugins)
        assert suite.threads == threads
        model = plugins.models.get(suite.model).build("cpu")
        return [t.config_hash for t in resolve_trials(suite, plugins,
                                                      model_identity(suite, model))]
    assert hashes(1) == hashes(2)


@pytest.mark.parametrize("sampler", ["heun", "euler_maruyama"])
def test_the_digits_network_gives_the_same_samples_with_1_and_2_threads(
        plugins, one_thread_after, sampler):
    """Equal to float32 rounding, not always bitwise: the convolution library may pick a
    different kernel, summing in another order, for another thread count (measured:
    bitwise at 32 samples x 4 steps, 6e-6 of the largest value at 8 x 3)."""
    model = plugins.models.get("digits").build("cpu").to(dtype=torch.float32)
    grid = make_grid(model.sde, "karras", 3)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(generate(model, plugins.samplers.get(sampler), grid, seed=0,
                             indices=range(8)))
    scale = outs[0].abs().max().item()
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("env, expected", [
    (None, 1), ("3", 3), (" 2 ", 2), ("0", 1), ("4,2", 1), ("many", 1),
    (str(MAX_THREADS + 1), 1),
])
def test_default_threads_follow_omp_num_threads_else_one(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert default_threads() == expected


def test_the_suite_field_wins_over_the_environment(monkeypatch, plugins):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert build_suite(BASE, plugins).threads == 2
    assert build_suite(dict(BASE, threads=1), plugins).threads == 1


@pytest.mark.parametrize("threads", [0, -1, MAX_THREADS + 1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(plugins, threads):
    with pytest.raises(SuiteError, match=r"threads must be"):
        build_suite(dict(BASE, threads=threads), plugins)


def test_threads_is_applied_logged_and_restored(bench, tmp_path, capsys, one_thread_after):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    assert harness("run", suite, "--threads", "2", "--samplers", "euler", "--steps", "2",
                   "--quiet") == 0
    records = [json.loads(line) for line in
               (tmp_path / "runs" / "tiny" / "trials.jsonl").read_text().splitlines()]
    logged = [r["environment"]["torch_threads"] for r in records if r["kind"] == "suite"]
    assert logged == ["2"]
    assert torch.get_num_threads() == 1
    assert harness("run", suite, "--dry-run", "--threads", "3") == 0
    assert "threads = 3" in capsys.readouterr().out
    assert harness("run", suite, "--dry-run", "--threads", "0") == 2
    assert "threads must be an integer >= 1, got 0" in capsys.readouterr().err
