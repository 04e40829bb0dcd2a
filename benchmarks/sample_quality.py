"""Sample quality of the shipped digits model: the "Sample quality" section of
`results/pretrained.md`.

    python benchmarks/sample_quality.py [--samples 1000] [--seeds 0,1] [--steps 18] \\
        [--grid results/digits_samples.png] [--json results/sample_quality.json]

Draws `--samples` samples per seed with the built-in `heun` sampler (Karras et al. 2022,
Alg. 1: `--steps` 18 steps = 35 NFE, last step Euler) on the karras grid (rho = 7, sigma
80 -> 0.002, then 0) through `harness.generate`, so sample i of seed s starts from the
harness's per-sample noise (Philox4x32-10 at (s, i), `harness/core/noise.py`) and is the
same for any batch size or thread count. Samples are quantised to the 17 grey levels
(`harness.models.digits.quantize`) unless said otherwise.

FID here is the Frechet formula computed with numpy/scipy (`scipy.linalg.sqrtm`, unbiased
covariances) on the shipped classifier's 64 features, against the 355 test digits; it is
not the suite's FID (torchmetrics, with bootstrap intervals) but gives the same value on
the same features. Beside the samples it measures, as floors, real training images
against the test split: `--subsets` random subsets of the training digits of the same
size as the samples (torch.randperm under a generator seeded 0), and all 1,442.

Other checks: the distance (L2 over the 64 pixels in the [-1, 1] scale) from each sample
to its nearest training image (a copy would be at 0), against the same distance for the
test images; the classifier's predicted classes and mean top-class probability.

Prints a markdown summary and writes the numbers as JSON to `--json` (and the first 100
samples of the first seed as a picture to `--grid`) when given. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from harness import CountedModel, generate, make_grid
from harness.models import digits
from harness.models.pretrained import load_digits_model, load_feature_extractor
from harness.plugin.manager import get_sampler


def frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) of two feature sets (N, F)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = linalg.sqrtm(c1 @ c2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2)
                 - 2 * np.trace(root.real))


def nearest(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each image of `a`, the L2 distance to its nearest image of `b` (float64)."""
    return torch.cdist(a.flatten(1).double(), b.flatten(1).double()).min(dim=1).values


def main() -> None:
    parser = argparse.ArgumentParser(description="sample quality of the shipped digits model")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=18, help="heun steps (2N-1 NFE)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--subsets", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, help="PNG of the first 100 samples of seed 0")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]

    model = load_digits_model("cpu")
    extractor = load_feature_extractor("cpu")
    sampler = get_sampler("heun")
    grid = make_grid(model.sde, "karras", args.steps)
    train, _ = digits.load_split("train")
    test, _ = digits.load_split("test")

    def features(x: torch.Tensor) -> np.ndarray:
        return extractor(x).double().numpy()

    f_train, f_test = features(train), features(test)
    figures: dict = {
        "sampler": "heun", "steps": args.steps, "grid": "karras (rho 7)",
        "samples_per_seed": args.samples, "seeds": seeds, "threads": args.threads,
        "torch": torch.__version__, "host": platform.node(), "per_seed": {},
    }
    first = None
    for seed in seeds:
        counted = CountedModel(model)
        start = time.perf_counter()
        parts = [generate(counted, sampler, grid, seed=seed,
                          indices=range(i, min(i + args.batch_size, args.samples)))
                 for i in range(0, args.samples, args.batch_size)]
        seconds = time.perf_counter() - start
        raw = torch.cat(parts)
        x = digits.quantize(raw)
        first = x if first is None else first
        logits = extractor.logits(x)
        probs = logits.softmax(dim=1)
        classes = torch.bincount(probs.argmax(dim=1), minlength=10)
        near = nearest(x, train)
        figures["per_seed"][seed] = {
            "nfe_per_sample": counted.nfe.rows / args.samples,
            "sampling_s": seconds,
            "fid_vs_test": frechet(features(x), f_test),
            "fid_vs_test_unquantised_clipped": frechet(features(raw.clamp(-1, 1)), f_test),
            "fid_vs_train": frechet(features(x), f_train),
            "class_counts": classes.tolist(),
            "mean_top_class_probability": float(probs.max(dim=1).values.mean()),
            "nearest_train_distance_median": float(near.median()),
            "nearest_train_distance_min": float(near.min()),
            "copies_of_training_images": int((near == 0).sum()),
        }
        print(f"seed {seed}: {json.dumps(figures['per_seed'][seed])}", file=sys.stderr)

    gen = torch.Generator().manual_seed(0)
    size = min(args.samples, len(train))
    subsets = [frechet(f_train[torch.randperm(len(train), generator=gen)[:size].numpy()],
                       f_test) for _ in range(args.subsets)]
    figures["train_subsets_vs_test"] = {"size": size, "fids": subsets,
                                        "mean": float(np.mean(subsets))}
    figures["all_train_vs_test"] = frechet(f_train, f_test)
    figures["test_nearest_train_distance_median"] = float(nearest(test, train).median())
    floor = figures["train_subsets_vs_test"]["mean"]
    for row in figures["per_seed"].values():
        row["fid_over_train_subset_fid"] = row["fid_vs_test"] / floor

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.grid:
        write_grid(first[:100], args.grid,
                   f"EDM digits model, Heun {args.steps} steps ({2 * args.steps - 1} NFE), "
                   f"first 100 of {args.samples} samples (seed {seeds[0]})")
    print_summary(figures)


def write_grid(x: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(10, 10, figsize=(6, 6))
    for k, axis in enumerate(axes.flat):
        if k < len(x):
            axis.imshow(x[k, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1,
                        interpolation="nearest")
        axis.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(left=0.03, right=0.97, bottom=0.02, top=0.93, wspace=0.1,
                           hspace=0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def print_summary(f: dict) -> None:
    n = f["samples_per_seed"]
    print("| comparison | FID |\n| --- | --- |")
    for seed, row in f["per_seed"].items():
        print(f"| {n:,} samples (seed {seed}) vs test | {row['fid_vs_test']:.2f} "
              f"({row['fid_vs_test_unquantised_clipped']:.2f} unquantised, clipped) |")
    s = f["train_subsets_vs_test"]
    print(f"| {s['size']:,} training images vs test ({len(s['fids'])} random subsets) | "
          f"{s['mean']:.2f} mean ({min(s['fids']):.2f} to {max(s['fids']):.2f}) |")
    print(f"| all training images vs test | {f['all_train_vs_test']:.2f} |")
    for seed, row in f["per_seed"].items():
        print(f"| {n:,} samples (seed {seed}) vs all training images | "
              f"{row['fid_vs_train']:.2f} |")
    print()
    for seed, row in f["per_seed"].items():
        counts = row["class_counts"]
        print(f"seed {seed}: FID / train-subset FID {row['fid_over_train_subset_fid']:.2f}; "
              f"nearest training image median {row['nearest_train_distance_median']:.2f} "
              f"(min {row['nearest_train_distance_min']:.2f}, "
              f"{row['copies_of_training_images']} copies); classes {min(counts)} to "
              f"{max(counts)} per class; mean top-class probability "
              f"{row['mean_top_class_probability']:.3f}; sampling {row['sampling_s']:.1f} s")
    print(f"test images: nearest training image median "
          f"{f['test_nearest_train_distance_median']:.2f}")


if __name__ == "__main__":
    main()
