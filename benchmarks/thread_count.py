"""Forward passes of the shipped digits network with 1 and 2 torch threads, idle and loaded.

    python benchmarks/thread_count.py [--passes 20] [--batch-size 128] [--repeats 5]

Chooses the default of `harness run --threads`. One process times a fixed batch of
forward passes (`model.denoise`, no gradients) at each thread count, the counts
interleaved repeat by repeat so that a drift in the machine's speed hits both alike;
first with nothing else started by this script ("idle": other users of a shared machine
still count), then with `--competitors` CPU-bound processes (a Python busy loop each)
running beside it. It prints the median seconds per condition, the spread (min-max) and
the ratios within each condition, and writes them to
`results/microbench/thread_count.json`. A script, not a test: timings are no assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shipped_model import digits_model  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "microbench"
BUSY_LOOP = "while True: pass"


def time_passes(model, x: torch.Tensor, sigma: float, passes: int, threads: int) -> float:
    """Seconds for `passes` forward passes at `threads` intra-op threads (after one
    untimed pass at that count, which pays for the thread pool's resizing)."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        model.denoise(x, sigma)
        start = time.perf_counter()
        for _ in range(passes):
            model.denoise(x, sigma)
        return time.perf_counter() - start


def measure(model, x, sigma, args, thread_counts) -> dict[int, list[float]]:
    times: dict[int, list[float]] = {n: [] for n in thread_counts}
    for _ in range(args.repeats):
        for threads in thread_counts:
            times[threads].append(time_passes(model, x, sigma, args.passes, threads))
    return times


def summarise(times: dict[int, list[float]]) -> dict[str, object]:
    medians = {n: statistics.median(t) for n, t in times.items()}
    one = medians[min(medians)]
    return {"seconds": {str(n): t for n, t in times.items()},
            "median_s": {str(n): m for n, m in medians.items()},
            "ratio_to_1_thread": {str(n): m / one for n, m in medians.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description="1 vs 2 torch threads, idle and loaded")
    parser.add_argument("--passes", type=int, default=20, help="forward passes per timing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timings per thread count")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--competitors", type=int, default=1,
                        help="CPU-bound processes started for the loaded condition")
    args = parser.parse_args()
    thread_counts = [int(n) for n in args.threads.split(",")]

    model, which = digits_model(torch.device("cpu"))
    x = torch.randn(args.batch_size, *model.data.shape)
    sigma = 1.0
    results = {"idle": summarise(measure(model, x, sigma, args, thread_counts))}
    competitors = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                   for _ in range(args.competitors)]
    try:
        time.sleep(1.0)  # let the competitors reach their loop
        results["loaded"] = summarise(measure(model, x, sigma, args, thread_counts))
    finally:
        for process in competitors:
            process.kill()
            process.wait()

    figures = {"model": which, "batch_size": args.batch_size, "passes": args.passes,
               "repeats": args.repeats, "competitors": args.competitors,
               "cpu_count": os.cpu_count(), "host": platform.node(),
               "version.torch": torch.__version__, **results}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "thread_count.json").write_text(json.dumps(figures, indent=2) + "\n")
    for condition in ("idle", "loaded"):
        r = results[condition]
        cells = [f"{n} thread(s) {r['median_s'][str(n)]:.2f} s "
                 f"[{min(r['seconds'][str(n)]):.2f}-{max(r['seconds'][str(n)]):.2f}] "
                 f"x{r['ratio_to_1_thread'][str(n)]:.2f}" for n in thread_counts]
        print(f"{condition:>6}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
