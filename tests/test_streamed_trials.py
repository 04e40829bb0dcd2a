"""Streamed trials (`stream`, `harness run --stream`): the samples go batch by batch
through the feature extractors and are not held, and nothing measured changes.

The expectations are a held run of the same suite (today's path, pinned elsewhere:
`tests/test_metric_values_unchanged.py`), a metric's own declaration, and the process's
peak resident memory read by the kernel (`ru_maxrss`, which sees torch's allocations
that `tracemalloc` does not) in a fresh process against the memory guard's prediction.
Run as `python -m tests.test_streamed_trials --memory N --out PATH`, this module is the
worker of the memory test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import Metric, TrialContext, hookimpl
from harness.bench.configuration.suite import SuiteError, build_suite
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.running.guards import (
    MemoryGuardError,
    check_trial_host_memory,
    plan_memory,
)
from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.metrics.streamed_features import StreamedFeatures
from harness.metrics.trial_features import TrialFeatures
from harness.plugin import manager as plugin_manager
from tests.plugins import gaussian_images

ROOT = Path(__file__).resolve().parents[1]
#: Images of the memory test: held, one copy is 20,000 x 3 x 64 x 64 x 4 B = 983 MB.
MEMORY_SAMPLES = 20_000
BATCH = 500
#: The memory test's allocator: glibc's, with every block above 128 KiB its own mapping,
#: returned when freed, so that peak RSS is the memory live at once. (The harness keeps
#: freed memory by default, `harness.core.host_allocator`: RSS then also counts freed
#: blocks waiting in the heap, up to 1 GiB, which says nothing of what is held.)
LIVE_MEMORY_ENV = {"HARNESS_HOST_ALLOCATOR": "system", "MALLOC_MMAP_THRESHOLD_": "131072"}
#: What sampling draws rather than holds: fields that differ between any two runs.
TIMINGS = ("wall_clock_s", "samples_per_s", "s_per_nfe", "network_s", "overhead_ratio",
           "peak_memory_mb", "stream_s")


class SubsetMetric(Metric):
    """The mean of the first `SUBSET` samples, read from `trial.samples`, declared."""

    name = "subset_mean"
    unit = "1"
    higher_is_better = False
    SUBSET = 5
    seen = 0

    def samples_read(self, suite):
        return self.SUBSET

    def compute(self, trial: TrialContext) -> dict[str, float]:
        SubsetMetric.seen = trial.samples.shape[0]
        return {self.name: float(trial.samples[:self.SUBSET].double().mean())}


class EverySampleMetric(Metric):
    """Reads every sample and declares nothing: the safe default."""

    name = "every_sample"
    unit = "1"
    higher_is_better = False
    computed = False

    def compute(self, trial: TrialContext) -> dict[str, float]:
        EverySampleMetric.computed = True
        return {self.name: float(trial.samples.mean())}


class _TestMetrics:
    harness_api_version = 1

    @staticmethod
    @hookimpl
    def harness_register_metrics(register):
        register(SubsetMetric())
        register(EverySampleMetric())


class Recorder:
    def suite_started(self, info):
        pass


@pytest.fixture(scope="module")
def plugins():
    loaded = plugin_manager.load_plugins(extra=[("streamed_test_metrics", _TestMetrics()),
                                                ("gaussian_images", gaussian_images)])
    assert not loaded.failures, loaded.failures
    return loaded


def _run(plugins, tmp_path, stream: bool, metrics: dict, images: bool = False, **fields):
    raw = {"model": "digits", "samplers": {"euler": {}, "heun": {}}, "steps": [2],
           "num_samples": 60, "batch_size": 16, "device": "cpu", "metrics": metrics,
           "stream": stream, **fields}
    suite = build_suite(raw, plugins)
    device = torch.device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    out = tmp_path / ("streamed" if stream else "held")
    return run_plan(plan, Sinks([Recorder()]), artifacts_dir=out / "grids", quiet=True,
                    samples_dir=out / "images" if images else None)


def test_streamed_and_held_trials_give_the_same_values_and_grids(plugins, tmp_path):
    metrics = {"fid": {"cache_dir": str(tmp_path)}, "fid_inf": {"cache_dir": str(tmp_path)},
               "kid": {"cache_dir": str(tmp_path), "subset_size": 20, "subsets": 5},
               "precision": {"cache_dir": str(tmp_path)},
               "recall": {"cache_dir": str(tmp_path)}, "subset_mean": {}}
    held = {r.trial.name: r for r in _run(plugins, tmp_path, False, metrics, images=True)
            if r.trial.kind != "floor"}
    streamed = {r.trial.name: r for r in _run(plugins, tmp_path, True, metrics, images=True)
                if r.trial.kind != "floor"}
    assert sorted(held) == sorted(streamed) == ["euler-2nfe-seed0", "heun-3nfe-seed0"]
    for name, a in held.items():
        b = streamed[name]
        assert a.status == b.status == FINISHED, (a.error, b.error)
        values = {k for k in a.metrics if k not in TIMINGS and not k.endswith("_s")}
        assert values == {k for k in b.metrics if k not in TIMINGS
                          and not k.endswith("_s")}
        for key in sorted(values):  # the same features: the same sums, to the last digit
            assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-12, abs=0), key
        assert a.metrics["nfe"] == b.metrics["nfe"] and a.metrics["fid_num_samples"] == 60
        # (Bit for bit the features are; a BLAS product over them may round in the last
        # place by where its buffers lie, as two held runs of fid_inf show.)
        assert a.replicates.keys() == b.replicates.keys()
        for key, values in a.replicates.items():
            assert b.replicates[key] == pytest.approx(values, rel=1e-12, abs=0), key
        assert "stream_s" in b.metrics and "stream_s" not in a.metrics
        # The stream's time is no part of sampling: wall over network time stays >= 1.
        assert b.metrics["overhead_ratio"] >= 1 - 1e-6
        assert (a.artifacts["samples.png"].read_bytes()
                == b.artifacts["samples.png"].read_bytes())
        images = [sorted((tmp_path / how / "images" / name).rglob("*.png"))
                  for how in ("held", "streamed")]
        assert len(images[0]) == len(images[1]) == 60
        assert [f.read_bytes() for f in images[0]] == [f.read_bytes() for f in images[1]]
        assert b.params["sample_images"].endswith("(60 PNG files, EDM's layout)")
    assert SubsetMetric.seen == 60  # the grid keeps up to 64: all 60, the 5 among them


def test_a_png_file_another_process_could_not_write_is_in_the_record(plugins, tmp_path,
                                                                     monkeypatch):
    """Under torchrun each process writes its share of the PNG files; rank 0 records a
    failure of any of them (the gather is the one collective stubbed here)."""
    from harness.core import distributed

    failed = "sample images not written to /x: [Errno 28] No space left on device"
    monkeypatch.setattr(distributed, "gather_objects", lambda mine: [mine, [failed]])
    results = [r for r in _run(plugins, tmp_path, True, {"fid": {"cache_dir": str(tmp_path)}},
                               images=True) if r.trial.kind != "floor"]
    for result in results:
        assert result.status == FINISHED, result.error
        assert f"rank 1: {failed}" in result.warnings
        assert "sample_images" not in result.params


def test_a_latent_models_streamed_images_are_its_held_decoded_images(tmp_path):
    """The decoder runs on each batch as it comes, in the batches a held trial decodes."""
    pytest.importorskip("diffusers")
    from tests.test_latent_model import IMAGE_DIM, _tiny_pipeline

    folder = tmp_path / "tiny_dit"
    _tiny_pipeline(folder)
    generator = torch.Generator().manual_seed(5)
    mu = 0.1 * torch.randn(IMAGE_DIM, dtype=torch.float64, generator=generator)
    npz = tmp_path / "reference.npz"
    np.savez(npz, mu=mu.numpy(), sigma=torch.eye(IMAGE_DIM, dtype=torch.float64).numpy())
    plugins = plugin_manager.load_plugins()
    values = []
    for stream in (False, True):
        suite = build_suite({
            "model": "latent", "model_options": {"path": str(folder)},
            "samplers": {"euler": {}}, "steps": [3], "num_samples": 40, "batch_size": 16,
            "device": "cpu", "seeds": [0], "stream": stream,
            "metrics": {"fid": {"extractor": "identity", "reference_npz": str(npz)}}},
            plugins)
        device = torch.device("cpu")
        plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
        [result] = run_plan(plan, Sinks([]), quiet=True)
        assert result.status == FINISHED, result.error
        assert result.metrics["decode_s"] > 0 and result.metrics["fid_num_samples"] == 40
        values.append(result.metrics["fid"])
    assert values[1] == pytest.approx(values[0], rel=1e-12, abs=0)


def test_a_guided_streamed_trial_gives_the_class_metrics_of_a_held_one(plugins, tmp_path):
    """Class FID reads the intended labels beside the streamed features."""
    metrics = {"class_fid": {"cache_dir": str(tmp_path), "num_reference": 600},
               "precision": {"cache_dir": str(tmp_path), "k": 3}}
    runs = [[r for r in _run(plugins, tmp_path, stream, metrics, model="gmm-cond-2d",
                             model_options={"sde": "edm"}, guidance=[2.0],
                             samplers={"heun": {}}, steps=[4], num_samples=200,
                             batch_size=64, dtype="float64")
             if r.trial.kind != "floor"] for stream in (False, True)]
    [held], [streamed] = runs
    assert held.status == streamed.status == FINISHED, (held.error, streamed.error)
    for key in ("class_fid", "precision"):
        assert streamed.metrics[key] == pytest.approx(held.metrics[key], rel=1e-12, abs=0)
    assert held.metrics["class_fid"] > 0


TORCHRUN_SUITE = """
model = "digits"
steps = [2]
num_samples = 61
batch_size = 8
seeds = [3]
device = "cpu"
tracking_uri = "sqlite:///mlflow.db"
[samplers.euler]
[metrics.fid]
[metrics.kid]
subset_size = 20
subsets = 5
[metrics.precision]
"""


@pytest.mark.slow
def test_two_processes_stream_their_shares_to_the_values_of_a_held_run(tmp_path):
    """Under torchrun each process streams its share (indices rank::2, batches of 8):
    the values and the PNG files are those of the same two processes holding them."""
    (tmp_path / "suite.toml").write_text(TORCHRUN_SUITE)
    runs = {}
    for how in ("held", "streamed"):
        folder = tmp_path / how
        folder.mkdir()
        extra = ["--stream"] if how == "streamed" else []
        # The worker imports the test plugins from the repository (as in
        # test_distributed_run.py); no launcher variables or tracking server inherited.
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                   HARNESS_CACHE_DIR=str(folder / "cache"))
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                     "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node=2", str(ROOT / "tests" / "harness_run_worker.py"), "run",
             str(tmp_path / "suite.toml"), "--out", "out", "--save-samples", "images",
             "--quiet", *extra], cwd=folder, env=env, capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = (folder / "out" / "suite" / "trials.jsonl").read_text().splitlines()
        runs[how] = {r["name"]: r for r in map(json.loads, lines) if r["kind"] == "trial"
                     and not r["floor"]}
    held, streamed = runs["held"]["euler-2nfe-seed3"], runs["streamed"]["euler-2nfe-seed3"]
    assert held["status"] == streamed["status"] == FINISHED
    for key, value in held["metrics"].items():
        if key not in TIMINGS and not key.endswith("_s"):
            assert streamed["metrics"][key] == pytest.approx(value, rel=1e-12, abs=0), key
    assert held["metrics"]["fid_num_samples"] == 61
    pictures = {how: sorted((tmp_path / how / "images").rglob("*.png"))
                for how in runs}
    assert len(pictures["held"]) == len(pictures["streamed"]) == 61
    assert ([p.read_bytes() for p in pictures["held"]]
            == [p.read_bytes() for p in pictures["streamed"]])


def test_a_metric_of_every_sample_is_refused_before_anything_runs(plugins, tmp_path):
    EverySampleMetric.computed = False
    with pytest.raises(SuiteError, match="every_sample reads every sample"):
        _run(plugins, tmp_path, True, {"every_sample": {}})
    assert not EverySampleMetric.computed
    [result] = [r for r in _run(plugins, tmp_path, False, {"every_sample": {}},
                                samplers={"euler": {}})]
    assert result.status == FINISHED and EverySampleMetric.computed  # held: as before


def test_a_declared_subset_is_what_the_metric_gets(plugins, tmp_path):
    # More than the grid keeps, fewer than the trial has.
    SubsetMetric.SUBSET = 100
    try:
        [held] = _run(plugins, tmp_path, False, {"subset_mean": {}},
                      samplers={"euler": {}}, num_samples=150)
        [streamed] = _run(plugins, tmp_path, True, {"subset_mean": {}},
                          samplers={"euler": {}}, num_samples=150)
    finally:
        SubsetMetric.SUBSET = 5
    assert streamed.status == FINISHED, streamed.error
    assert SubsetMetric.seen == 100
    # The first 100 samples, as a held trial has them (batches of 16 cut them at 96).
    assert streamed.metrics["subset_mean"] == held.metrics["subset_mean"]


def test_the_streams_time_is_no_part_of_the_sampling_time(plugins, tmp_path, monkeypatch):
    # Each batch's extraction made slow on purpose: seconds against a sampling of
    # milliseconds (4 batches of 16 digits, 2 steps).
    pause = 0.5
    slow_add = StreamedFeatures.add

    def add(self, rows):
        time.sleep(pause)
        slow_add(self, rows)

    monkeypatch.setattr(StreamedFeatures, "add", add)
    results = _run(plugins, tmp_path, True, {"fid": {"cache_dir": str(tmp_path)}},
                   samplers={"euler": {}})
    [result] = [r for r in results if r.trial.kind != "floor"]
    assert result.status == FINISHED, result.error
    assert result.metrics["stream_s"] >= 4 * pause
    assert result.metrics["wall_clock_s"] < pause
    assert result.metrics["overhead_ratio"] >= 1 - 1e-6


class BatchMeanFeatures(torch.nn.Module):
    """Features that depend on a row's batch-mates (each row minus its batch's mean):
    equal to held extraction's only when cut into the same chunks."""

    sha256 = "batch-mean-features"
    num_features = 2

    def forward(self, x):
        flat = x.flatten(1)[:, :2].double()
        return flat - flat.mean(0)


def test_streamed_features_are_cut_into_held_extractions_chunks():
    model = gaussian_images.GaussianImages()
    rows = 2 * torch.rand(1_100, *gaussian_images.SHAPE) - 1.5  # some clamped away
    extractor = BatchMeanFeatures()
    held = TrialFeatures(rows, model).get(extractor, "clamp")
    streamed = StreamedFeatures([(extractor, "clamp")], model)
    for first in range(0, rows.shape[0], 48):  # batches that straddle the chunks
        streamed.add(rows[first:first + 48])
    [features] = streamed.finish().values()
    assert torch.equal(features.local, held.local)
    assert torch.equal(features.stats.features_sum, held.stats.features_sum)


def test_the_guard_counts_the_spaces_whose_width_is_declared():
    class Undeclared(torch.nn.Module):  # a plugin's extractor need not say its width
        sha256 = "undeclared"

    spaces = StreamedFeatures([(BatchMeanFeatures(), "clamp"), (Undeclared(), "clamp"),
                               (gaussian_images.RandomProjection(), "none")],
                              gaussian_images.GaussianImages())
    assert spaces.widths == [2, gaussian_images.FEATURES]


def test_the_guard_suggests_streaming_when_held_samples_would_not_fit():
    model = gaussian_images.GaussianImages()
    per_sample = math.prod(gaussian_images.SHAPE) * 4
    # FID-50k-like: 50,000 samples, 4 GB of memory; held they need 3 copies of 2.5 GB.
    available = {"cpu": 4 * 2.0**30}
    with pytest.raises(MemoryGuardError, match="--stream: about"):
        plan_memory(model, torch.float32, 50_000, BATCH, torch.device("cpu"),
                    available=available)
    plan = plan_memory(model, torch.float32, 50_000, BATCH, torch.device("cpu"),
                       available=available, stream=True)
    # Written out from the guard's docstring: the grid's 64, a chunk, a batch; features.
    assert plan.bytes_held == ((64 + 500 + BATCH) * per_sample * 3 + 50_000 * 2 * 2048 * 8
                               + (12 * 2048**2 + 2 * 2**24) * 8)
    assert plan.note.startswith("streamed: about 2.3 GiB held on the host")


def test_fid_and_fd_dinov2_streamed_hold_both_spaces_features():
    model = gaussian_images.GaussianImages()
    per_sample = math.prod(gaussian_images.SHAPE) * 4
    # Written out from the guard's docstring: Inception's 2,048 and DINOv2's 1,024.
    expected = ((64 + 500 + BATCH) * per_sample * 3 + 50_000 * (2048 + 1024) * 8 * 2
                + (12 * 2048**2 + 2 * 2**24) * 8)  # FID's matrices and replicate blocks
    held = check_trial_host_memory(model, torch.float32, 50_000, BATCH, [2048, 1024],
                                   stream=True, available=4 * 2.0**30)
    assert held == expected
    with pytest.raises(MemoryGuardError, match=r"2 feature space\(s\), 2,048 \+ 1,024 wide"):
        check_trial_host_memory(model, torch.float32, 50_000, BATCH, [2048, 1024],
                                stream=True, available=expected / 0.8 - 1)
    # Held, the same features on top of all 50,000 samples (three copies).
    assert check_trial_host_memory(model, torch.float32, 50_000, BATCH, [2048, 1024],
                                   stream=False) == (50_000 * per_sample * 3 + expected
                                                     - (64 + 500 + BATCH) * per_sample * 3)


def test_a_feature_space_wider_than_planned_is_refused_before_any_trial(
        plugins, tmp_path, monkeypatch):
    """The plan assumes one space of 2,048 features; FID of the raw 3x64x64 pixels
    (`identity`) has 12,288. With memory for the first but not the second, the runner
    refuses once the metric has loaded its extractor, before any trial runs."""
    import harness.bench.running.guards as guards
    # Planned: 0.8 GB (FID's 2,048 x 2,048 matrices most of it); at 12,288 features
    # those matrices alone are 14 GB.
    num = 600
    monkeypatch.setattr(guards, "available_bytes", lambda device: 1.2 * 2.0**30)

    def suite(extractor):
        raw = {"model": "gaussian-images", "samplers": {"euler": {}}, "steps": [2],
               "num_samples": num, "batch_size": 32, "device": "cpu", "stream": True,
               "metrics": {"fid": {"cache_dir": str(tmp_path), "extractor": extractor}}}
        built = build_suite(raw, plugins)
        device = torch.device("cpu")
        return resolve_plan(built, plugins, load_model(built, plugins, device), device)

    plan = suite("identity")  # the plan passes: it assumes 2,048 features
    with pytest.raises(MemoryGuardError, match=r"1 feature space\(s\), 12,288 wide"):
        run_plan(plan, Sinks([Recorder()]), quiet=True)
    [result] = [r for r in run_plan(suite("model"), Sinks([Recorder()]), quiet=True)
                if r.trial.kind != "floor"]
    assert result.status == FINISHED, result.error


def _memory_trial(num: int, stream: bool, cache_dir: str) -> dict:
    """Run one trial of `gaussian-images` in this (fresh) process; its peak RSS growth
    and what the memory guard predicts."""
    plugins = plugin_manager.load_plugins(extra=[("gaussian_images", gaussian_images)])
    suite = build_suite({"model": "gaussian-images", "samplers": {"euler": {}},
                         "steps": [2], "num_samples": num, "batch_size": BATCH,
                         "device": "cpu", "stream": stream,
                         "metrics": {"fid": {"cache_dir": cache_dir}}}, plugins)
    device = torch.device("cpu")
    model = load_model(suite, plugins, device)
    plan = resolve_plan(suite, plugins, model, device)
    guard = plan_memory(model, torch.float32, num, BATCH, device, stream=stream,
                        available={"cpu": math.inf})
    scale = 1 if sys.platform == "darwin" else 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    [result] = run_plan(plan, Sinks([Recorder()]), quiet=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"status": result.status, "error": result.error, "growth": after - before,
            # On the CPU the guard adds the batch's working memory to what is held.
            "predicted": guard.bytes_held + BATCH * guard.bytes_per_batch_sample,
            "fid": result.metrics.get("fid"),
            "num": result.metrics.get("fid_num_samples")}


@pytest.mark.slow
def test_a_streamed_trial_holds_what_the_guard_predicts(tmp_path):
    """20,000 images of 3x64x64 streamed in a fresh process (15-25 s on one core):
    its peak resident memory grows by less than the guard predicts, and by less than
    half of one held copy of the samples (a held run grows by about two copies)."""
    out = tmp_path / "memory.json"
    subprocess.run([sys.executable, "-m", "tests.test_streamed_trials", "--memory",
                    str(MEMORY_SAMPLES), "--cache-dir", str(tmp_path), "--out", str(out)],
                   cwd=ROOT, check=True, timeout=300, env={**os.environ, **LIVE_MEMORY_ENV})
    measured = json.loads(out.read_text())
    assert measured["status"] == FINISHED, measured["error"]
    assert measured["num"] == MEMORY_SAMPLES and math.isfinite(measured["fid"])
    one_copy = MEMORY_SAMPLES * math.prod(gaussian_images.SHAPE) * 4
    assert measured["growth"] < measured["predicted"] < one_copy * 3, measured
    assert measured["growth"] < one_copy / 2, measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--held", action="store_true")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    measured = _memory_trial(args.memory, not args.held, args.cache_dir)
    args.out.write_text(json.dumps(measured))


if __name__ == "__main__":
    main()
