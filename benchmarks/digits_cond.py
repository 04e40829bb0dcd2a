"""Reference numbers of the shipped class-conditional digits model (`results/digits_cond.md`).

    python benchmarks/digits_cond.py curve     # training curve CSV -> PNG
    python benchmarks/digits_cond.py nll       # test NLL: unconditional, and given labels
    python benchmarks/digits_cond.py samples   # class grid, and the classifier's accuracy

`curve` plots `results/digits_cond/training_curve.csv`, written by
`harness train digits-cond --curve results/digits_cond/training_curve.csv`. `nll` solves
the PF-ODE of all 355 test digits with `harness.metrics.likelihood.ode_nll` exactly as
`results/nll_digits.md` did for the unconditional model (2 Rademacher probes, dopri5 at
1e-5, seed 0), once for the null-class denoiser and once with each image's own label.
`samples` draws 100 samples per class with Heun's method (Karras et al. 2022, Alg. 1, no
churn, 18 steps), purely conditional (no guidance), reports how often the shipped
classifier reads back the class they were drawn for, and the FID against the test digits
of these samples, of the null class's samples and of the shipped unconditional model's
samples, all from the same initial noise. Each prints its numbers as JSON and
writes them under `results/digits_cond/`. The FID of unconditional samples comes from
`harness run` (see the results file). A script, not a test: one thread, a few minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from harness.core.model import ScoreModel
from harness.models import digits
from harness.models.classifier import accuracy
from harness.models.pretrained import load_conditional_digits_model, load_digits_model

OUT = Path(__file__).resolve().parents[1] / "results" / "digits_cond"


class GivenLabels(ScoreModel):
    """`model` conditioned on fixed labels, one per row of every batch it is given: the
    density of x given its label, for an NLL solve of all points in one batch."""

    def __init__(self, model: ScoreModel, labels: Tensor):
        super().__init__(model.sde, model.data)
        self.base = model
        self.labels = labels

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.base._denoise_labelled(x, sigma, self.labels.to(x.device))


def curve(args: argparse.Namespace) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (OUT / "training_curve.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) for r in rows]
    train = [float(r["train_loss"]) for r in rows]
    tested = [(int(r["epoch"]), float(r["test_loss_ema"])) for r in rows if r["test_loss_ema"]]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(epochs, train, lw=1, label="train (minibatch mean per epoch, labels dropped)")
    axis.plot(*zip(*tested), "o-", ms=3, lw=1, label="test, EMA weights, given labels")
    axis.set_xlabel("epoch (5 steps of 256 images)")
    axis.set_ylabel("EDM loss")
    axis.set_ylim(0.2, 0.6)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("digits-cond training", fontsize=9)
    figure.savefig(OUT / "training_curve.png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return {"epochs": len(rows), "last_train_loss": train[-1],
            "last_test_loss_ema": tested[-1][1], "wall_s": float(rows[-1]["wall_s"])}


def nll(args: argparse.Namespace) -> dict:
    from harness.metrics.likelihood import ode_nll

    model = load_conditional_digits_model("cpu")
    x, y = digits.load_split("test")
    x, y = x[:args.num], y[:args.num]
    out = {"model_sha256": model.sha256, "points": len(x)}
    per_point = {}
    for name, target in (("unconditional", model), ("given_labels", GivenLabels(model, y))):
        start = time.perf_counter()
        r = ode_nll(target, x, num_probes=2, probe="rademacher", rtol=1e-5, atol=1e-5,
                    seed=0)
        out[name] = {"bits_per_dim": r.bits_per_dim, "bits_per_dim_stderr":
                     r.bits_per_dim_stderr, "nats": r.nats, "nfe_mean": r.nfe_mean,
                     "probe_stderr": r.probe_stderr, "data_stderr": r.data_stderr,
                     "wall_s": round(time.perf_counter() - start, 1)}
        per_point[name] = r.values.double().mean(1)
        print(name, json.dumps(out[name]), flush=True)
    # Both solves draw the same dequantisation noise and probes per image (seed, index):
    # their difference per image is paired, -log p(x) + log p(x | y) = log p(y | x) / p(y)
    # for a model whose null class were the mixture of its classes.
    gain = per_point["unconditional"] - per_point["given_labels"]
    dim = model.data.dim
    out["label_gain"] = {
        "nats_per_image": float(gain.mean()),
        "nats_per_image_stderr": float(gain.std() / len(gain) ** 0.5),
        "bits_per_dim": float(gain.mean()) / dim / math.log(2),
        "bits_per_dim_stderr": float(gain.std() / len(gain) ** 0.5) / dim / math.log(2),
        "log_10_nats": math.log(10)}
    return out


@torch.no_grad()
def heun(model: ScoreModel, x: Tensor, labels: Optional[Tensor], steps: int = 18) -> Tensor:
    """EDM Algorithm 1 (deterministic Heun, rho = 7 grid from 80 to 0.002), conditional
    on `labels` (None: the model's plain denoiser)."""

    def denoise(x: Tensor, sigma: float) -> Tensor:
        if labels is None:
            return model.denoise(x, sigma)
        return model.denoise_labelled(x, sigma, labels)

    rho, lo, hi = 7.0, model.sde.sigma_min, model.sde.sigma_max
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    t = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).tolist()
    x = x * t[0]
    for t_cur, t_next in zip(t[:-1], t[1:]):
        d_cur = (x - denoise(x, t_cur)) / t_cur  # Euler step
        x_next = x + (t_next - t_cur) * d_cur
        if t_next > 0:  # second-order correction
            d_prime = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def _fid(features: Tensor, reference: Tensor) -> float:
    from harness.metrics.fid import frechet_distance

    return frechet_distance(features.mean(0), features.T.cov(), reference.mean(0),
                            reference.T.cov())


def samples(args: argparse.Namespace) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_conditional_digits_model("cpu")
    per_class = args.per_class
    labels = torch.arange(10).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    conditional = heun(model, noise, labels)
    # The same initial noise through the null class: the unconditional denoiser.
    unconditional = heun(model, noise, torch.full_like(labels, -1))
    baseline = heun(load_digits_model("cpu"), noise, None)  # the unconditional model
    classifier = model.classifier("cpu")
    x = digits.quantize(conditional)
    predicted = classifier(x).argmax(1)
    per = [(predicted[labels == c] == c).float().mean().item() for c in range(10)]
    # FID as the benchmark takes it (samples clamped to [-1, 1], the classifier's
    # features, the 355 test digits), with the first N training digits as the floor.
    extractor = model.feature_extractor("cpu")
    test = extractor(digits.load_split("test")[0]).double()
    train = digits.load_split("train")[0][:len(labels)]
    fid = {"conditional": _fid(extractor(conditional.clamp(-1, 1)).double(), test),
           "unconditional": _fid(extractor(unconditional.clamp(-1, 1)).double(), test),
           "digits_model": _fid(extractor(baseline.clamp(-1, 1)).double(), test),
           "training_digits": _fid(extractor(train).double(), test)}
    # The grid: row c holds the first 10 samples of class c.
    shown = x.view(10, per_class, 8, 8)[:, :10]
    canvas = torch.full((10 * 9 + 1, 10 * 9 + 1), -1.0)
    for c in range(10):
        for k in range(shown.shape[1]):
            canvas[1 + 9 * c:9 + 9 * c, 1 + 9 * k:9 + 9 * k] = shown[c, k]
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(canvas.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    axis.set_axis_off()
    axis.set_title("digits-cond, Heun 35 NFE, row c: label c", fontsize=8)
    figure.savefig(OUT / "class_samples.png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return {"samples": len(labels), "nfe": 35,
            "classifier_accuracy": accuracy(classifier, x, labels),
            "per_class_accuracy": [round(a, 3) for a in per],
            "fid_vs_test": fid, "fid_num_samples": len(labels), "fid_postprocess": "clamp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("curve").set_defaults(func=curve)
    p = sub.add_parser("nll")
    p.add_argument("--num", type=int, default=355, help="test points (default: all 355)")
    p.set_defaults(func=nll)
    p = sub.add_parser("samples")
    p.add_argument("--per-class", type=int, default=100)
    p.set_defaults(func=samples)
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    result = args.func(args)
    (OUT / f"{args.what}.json").write_text(json.dumps(result, indent=2) + "\n",
                                           encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
