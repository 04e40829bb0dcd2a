"""Evaluation at FID-50k scale: streamed against held trials, the memory guard's word,
and what the real networks cost per sample.

    python benchmarks/scale_evaluation.py [--samples 50000] [--replicates 10]
        [--out results/microbench/scale.md]

1. **Memory and time of one trial, streamed and held**, each in a fresh process (this
   script with `--worker`), `--samples` images of 3x64x64:
   model `gaussian-images` (`tests/plugins/gaussian_images.py`: N(0, 0.25 I) images with
   their exact denoiser, so that sampling costs little and what the process holds is
   what the harness keeps) with a feature extractor of `FEATURES` = 3,072 values, as
   wide as InceptionV3's 2,048 and DINOv2's 1,024 together (FID and FD_DINOv2: the
   bytes of their features are those of one space of the summed width); `euler`, 2 steps;
   metric `fid` against `REFERENCE` images (their statistics computed once, before
   either worker, and read from the cache). Per mode: the growth of the process's peak
   resident memory over `run_plan` (VmHWM reset before it, against VmRSS then; the
   metric's reference images, drawn again in `prepare`, included; glibc returning every
   freed block above 128 KiB, `LIVE_MEMORY_ENV`, so that the peak is what was live at
   once) against
   the guard's prediction for the same suite once its metrics are loaded
   (`harness.bench.running.guards.trial_host_bytes`: samples, features and FID's working
   matrices, plus one batch's working memory), the trial's wall time, its sampling rate and
   the time spent streaming and in the metric. FID's interval comes from `--replicates`
   resamples, not the runner's 200, and its small-N bias (`fid_bias`, an FID_inf fit)
   from 2 subset sizes drawn once, not 5 drawn 32 times: at this width each of those
   Frechet distances costs seconds on a CPU, the same streamed or held (part 3).
3. **The intervals' cost**: one Frechet distance (`harness.metrics.fid.frechet_distance`,
   float64) between random covariances of InceptionV3's 2,048 features, and with it what
   FID's interval and bias cost per trial at the runner's defaults (200 resamples, 5 x 32
   subsets).
2. **The real networks, per sample, here**: one call of a 3x64x64 U-Net of DDPM++'s
   layout (`harness.models.speed_unet` at 64 pixels, random weights) and DINOv2 ViT-L/14
   features (`harness.metrics.dinov2`, random weights, EDM2's preprocessing), each at
   batch `--net-batch`, after one untimed call; with them, the CPU hours of FID-50k +
   FD_DINOv2 at 10 and 35 network evaluations per sample, extrapolated. InceptionV3 needs
   torch-fidelity, which is not installed here: it is left out, with a note.

Figures are of this machine, while whatever else runs on it runs; the load average is
printed beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/plugins/gaussian_images.py, the model of part 1

from machine_load import load_average, load_line  # noqa: E402
from report_output import publish  # noqa: E402

from harness import ModelSpec, hookimpl  # noqa: E402
from tests.plugins import gaussian_images  # noqa: E402

FEATURES = 2048 + 1024
REFERENCE = 4_000
BATCH = 500
STEPS = 2
#: glibc returns freed blocks above 128 KiB at once: peak RSS is then what was live.
LIVE_MEMORY_ENV = {"HARNESS_HOST_ALLOCATOR": "system", "MALLOC_MMAP_THRESHOLD_": "131072"}
GIB = 2.0**30


class ScaleImages:
    """`gaussian-images` with 3,072 features and 10,000 reference images."""

    harness_api_version = 1

    @staticmethod
    @hookimpl
    def harness_register_models(register):
        register(ModelSpec(
            "gaussian-images", lambda device="cpu": gaussian_images.GaussianImages(
                FEATURES, REFERENCE).to(device),
            description=f"N(0, 0.25 I) on 3x64x64, exact denoiser, {FEATURES} features"))


def _suite(samples: int, stream: bool, cache_dir: str):
    from harness.bench.configuration.suite import build_suite
    from harness.plugin import manager

    plugins = manager.load_plugins(extra=[("scale_images", ScaleImages())])
    assert not plugins.failures, plugins.failures
    suite = build_suite({"model": "gaussian-images", "samplers": {"euler": {}},
                         "steps": [STEPS], "num_samples": samples, "batch_size": BATCH,
                         "device": "cpu", "stream": stream,
                         "metrics": {"fid": {"cache_dir": cache_dir}}}, plugins)
    return suite, plugins


class _Recorder:
    def suite_started(self, info):
        pass


def _status_bytes(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> float:
    """Set the peak resident memory (VmHWM) to the memory resident now, and return it:
    what came before (loading, planning) does not hide the trial's peak (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def worker(samples: int, stream: bool, cache_dir: str, replicates: int) -> dict:
    """One trial in this fresh process: what it held, what the guard said, its times."""
    import functools

    from harness.bench.recording.sinks import Sinks
    from harness.bench.running import runner
    from harness.bench.running.guards import plan_memory, trial_host_bytes
    from harness.bench.running.plan import resolve_plan
    from harness.metrics.bootstrap import Bootstrap

    torch.set_num_threads(1)
    suite, plugins = _suite(samples, stream, cache_dir)
    device = torch.device("cpu")
    model = runner.load_model(suite, plugins, device)
    plan = resolve_plan(suite, plugins, model, device)
    guard = plan_memory(model, torch.float32, samples, BATCH, device, stream=stream,
                        available={"cpu": math.inf})
    held = trial_host_bytes(model, torch.float32, samples, BATCH, [FEATURES], stream)
    runner.Bootstrap = functools.partial(Bootstrap, replicates=replicates)
    import harness_plugins.metrics as builtin_metrics  # fid_bias from 2 x 1 subsets
    builtin_metrics.fid_infinity = functools.partial(builtin_metrics.fid_infinity,
                                                     fractions=(0.5, 1.0), draws=1)
    before = reset_peak_rss()
    start = time.perf_counter()
    [result] = [r for r in runner.run_plan(plan, Sinks([_Recorder()]), quiet=True)
                if r.trial.kind != "floor"]
    wall = time.perf_counter() - start
    after = _status_bytes("VmHWM")
    metrics = result.metrics
    return {"status": result.status, "error": result.error, "growth": after - before,
            "predicted": held + BATCH * guard.bytes_per_batch_sample,
            "wall_s": wall, "fid": metrics.get("fid"),
            "num": metrics.get("fid_num_samples"),
            "sampling_s": metrics.get("wall_clock_s"),
            "samples_per_s": metrics.get("samples_per_s"),
            "stream_s": metrics.get("stream_s"), "metrics_s": metrics.get("metrics_s"),
            "memory_note": plan.memory_note}


def memory_rows(samples: int, replicates: int, cache_dir: str) -> list[dict]:
    """Both modes, each in a fresh process, the reference statistics cached first."""
    worker(min(samples, 1_000), True, cache_dir, 2)  # fills the cache, here
    rows = []
    for mode in ("streamed", "held"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            subprocess.run([sys.executable, __file__, "--worker", mode, "--samples",
                            str(samples), "--replicates", str(replicates), "--cache-dir",
                            cache_dir, "--json", str(out)],
                           check=True, env={**os.environ, **LIVE_MEMORY_ENV,
                                            "OMP_NUM_THREADS": "1"})
            rows.append({"mode": mode, **json.loads(out.read_text())})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def per_sample_seconds(function, batch: int, repeats: int = 2) -> float:
    function()  # untimed: first-use allocations
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / (repeats * batch)


def network_rows(batch: int) -> dict:
    """Seconds per sample of a 64x64 U-Net call and of DINOv2 ViT-L/14 features."""
    import dataclasses

    from harness.metrics.dinov2 import VIT_L14, DINOv2, DINOv2Features
    from harness.models.speed_unet import CONFIG, untrained_unet_32

    torch.set_num_threads(1)
    config = dataclasses.replace(CONFIG, image_size=64)
    model = untrained_unet_32("cpu", config=config)
    x = torch.randn(batch, 3, 64, 64)
    sigma = torch.full((batch,), 1.0)
    parameters = sum(p.numel() for p in model.network.parameters())
    with torch.no_grad():
        unet = per_sample_seconds(lambda: model.network(x, sigma), batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dinov2 = DINOv2Features(DINOv2(VIT_L14).eval(), weights_sha256="random")
    with torch.no_grad():
        features = per_sample_seconds(lambda: dinov2(x.clamp(-1, 1)), batch)
    return {"unet_s": unet, "unet_parameters": parameters, "dinov2_s": features,
            "dinov2_parameters": sum(p.numel() for p in dinov2.parameters())}


def frechet_seconds(features: int = 2048) -> float:
    """Seconds of one float64 Frechet distance between two random covariances."""
    from harness.metrics.fid import frechet_distance

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2 * features, features, dtype=torch.float64, generator=generator)
            for _ in range(2))
    means = torch.zeros(features, dtype=torch.float64)
    covariances = (a.T @ a / (2 * features), b.T @ b / (2 * features))
    start = time.perf_counter()
    frechet_distance(means, covariances[0], means, covariances[1])
    return time.perf_counter() - start


def _gib(count: float) -> str:
    return f"{count / GIB:.2f} GiB"


def report(rows: list[dict], nets: dict, args, start_load) -> str:
    lines = ["# Evaluation at scale: streamed against held, and the real networks", "",
             f"CPU, 1 torch thread. Part 1: {args.samples:,} images of 3x64x64 "
             f"(`gaussian-images`, exact denoiser), `euler` {STEPS} steps, batch {BATCH}, "
             f"FID in a {FEATURES:,}-wide feature space (InceptionV3's 2,048 and DINOv2's "
             f"1,024 together) against {REFERENCE:,} reference images (statistics cached "
             f"beforehand), bootstrap intervals from {args.replicates} resamples; each "
             f"mode in a fresh process, glibc returning freed blocks above 128 KiB.", "",
             "| mode | peak RSS growth | guard's prediction | growth / prediction | "
             "trial wall | sampling samples/s | stream_s | metrics_s | FID |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "FINISHED":
            lines.append(f"| {row['mode']} | failed: {row['error']} |||||||")
            continue
        lines.append(
            f"| {row['mode']} | {_gib(row['growth'])} | {_gib(row['predicted'])} | "
            f"{row['growth'] / row['predicted']:.2f} | {row['wall_s']:.0f} s | "
            f"{row['samples_per_s']:,.0f} | {row.get('stream_s') or 0:.1f} | "
            f"{row['metrics_s']:.0f} | {row['fid']:.6g} |")
    by_mode = {r["mode"]: r for r in rows}
    if all(r["status"] == "FINISHED" for r in rows) and len(rows) == 2:
        streamed, held = by_mode["streamed"], by_mode["held"]
        same = "equal" if streamed["fid"] == held["fid"] else "DIFFERENT"
        lines += ["", f"Streamed, the trial's peak memory grew by "
                      f"{streamed['growth'] / held['growth']:.2f} of the held trial's; both "
                      f"FIDs are {same} ({held['fid']!r} held)."]
    nfe = (10, 35)
    per = {n: args.samples * (n * nets["unet_s"] + nets["dinov2_s"]) / 3600 for n in nfe}
    lines += ["", f"Part 2, the real networks on this CPU, batch {args.net_batch}, "
                  f"random weights:", "",
              "| network | parameters | s per sample |", "|---|---|---|",
              f"| U-Net, DDPM++ layout at 3x64x64, one call | "
              f"{nets['unet_parameters'] / 1e6:.1f} M | {nets['unet_s']:.3f} |",
              f"| DINOv2 ViT-L/14, 224x224 features | "
              f"{nets['dinov2_parameters'] / 1e6:.1f} M | {nets['dinov2_s']:.3f} |", "",
              f"FID-50k + FD_DINOv2 of one sampler here: {per[10]:,.0f} CPU hours at NFE 10, "
              f"{per[35]:,.0f} at NFE 35 (sampling and DINOv2; InceptionV3, not installed "
              f"here, adds its own).",
              "", f"Part 3: one float64 Frechet distance at 2,048 features takes "
                  f"{args.frechet_s:.1f} s here, so FID's interval (200 resamples) and its "
                  f"bias (5 x 32 subsets) cost about {args.frechet_s * 360 / 60:.0f} min "
                  f"per trial on this CPU, whatever N, streamed or held.",
              "", load_line(start_load, load_average())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--net-batch", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", choices=("streamed", "held"))
    parser.add_argument("--cache-dir")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.worker:
        row = worker(args.samples, args.worker == "streamed", args.cache_dir,
                     args.replicates)
        args.json.write_text(json.dumps(row))
        return
    start_load = load_average()
    with tempfile.TemporaryDirectory() as cache_dir:
        rows = memory_rows(args.samples, args.replicates, cache_dir)
    nets = network_rows(args.net_batch)
    args.frechet_s = frechet_seconds()
    text = report(rows, nets, args, start_load)
    publish(text, args.out)


if __name__ == "__main__":
    main()
