"""Reproducible CPU training of the digits score network and the digits classifier.

Reproducibility: every random number comes from generators seeded by the config (data
order, noise levels, noise, augmentation) or from the global generator seeded once at the
start (dropout); `torch.use_deterministic_algorithms(True)` and a fixed thread count
(one by default: the order of floating point reductions depends on the number of
threads) make the kernels themselves deterministic; training runs a fixed number of
steps with no early stopping or wall-clock dependence. On one machine and one torch
build the resulting weight file is then bit-identical across runs (its sha256 is in the
manifest); other CPUs or torch builds may pick different kernels and differ in the last
bits.

Score network: EDM denoising score matching (Karras et al. 2022, Sec. 5 and Table 1):
ln(sigma) ~ N(P_mean, P_std^2) with P_mean = -1.2, P_std = 1.2, loss
lambda(sigma) ||D(y + sigma n; sigma) - y||^2 with lambda = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, Adam with a linear warm-up and a cosine decay, and an exponential
moving average of the weights (the EMA weights are what is shipped).

Class-conditional score network (`network.num_classes > 0`): the same data, loss,
preconditioning and schedule, with each training image's class given to the network and
replaced by the null class (`NULL_LABEL`) with probability `label_dropout` (0.1), so that
one network is both the conditional and the unconditional denoiser (classifier-free
guidance, Ho & Salimans 2022). The unconditional training draws no labels at all: its
random stream, and so its weights, are what they were before conditioning existed.
"""

from __future__ import annotations

import contextlib
import copy
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import digits
from ..core.model import NULL_LABEL
from .checkpoint import Checkpoint, save_checkpoint
from .classifier import ARCHITECTURE as CLASSIFIER_ARCHITECTURE
from .classifier import ClassifierConfig, DigitsClassifier, accuracy
from .unet import ARCHITECTURE as UNET_ARCHITECTURE
from .unet import EDMPrecond, UNetConfig, count_parameters

SCORE_MODEL_NAME = "digits_edm"
CONDITIONAL_MODEL_NAME = "digits_edm_cond"
CLASSIFIER_NAME = "digits_classifier"

Log = Callable[[str], None]
#: Receives one row per epoch of score training (see `train_score_model`).
EpochLog = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ScoreTrainConfig:
    """Everything that determines the shipped score network's weights."""

    seed: int = 0
    steps: int = 1600
    batch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 100
    #: Cosine decay from `lr` to `lr * final_lr_fraction` over the steps after warm-up.
    final_lr_fraction: float = 0.05
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    threads: int = 1
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    #: Draws of (sigma, noise) per image for the train/test losses in the manifest.
    eval_repeats: int = 4
    network: UNetConfig = field(default_factory=UNetConfig)
    #: Probability that a training image's class is replaced by the null class; used
    #: only by a class-conditional network (`network.num_classes > 0`).
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {self.label_dropout}")

    @property
    def conditional(self) -> bool:
        return self.network.num_classes > 0

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values; an unconditional one without `label_dropout`, which
        it does not use (its manifest keeps the keys it had before)."""
        out = asdict(self)
        out["network"] = self.network.to_dict()
        if not self.conditional:
            del out["label_dropout"]
        return out


#: The shipped class-conditional model: the unconditional recipe with the 10 digit classes.
CONDITIONAL_SCORE_CONFIG = ScoreTrainConfig(network=UNetConfig(num_classes=10))


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Everything that determines the shipped classifier's weights."""

    seed: int = 0
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    final_lr_fraction: float = 0.02
    #: Random translation by up to this many pixels (background filled in), which makes
    #: features depend less on exact placement and lifts test accuracy.
    max_shift: int = 1
    threads: int = 1
    network: ClassifierConfig = field(default_factory=ClassifierConfig)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["network"] = self.network.to_dict()
        return out


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[torch.Generator]:
    """Seed the global generator, force deterministic kernels and a fixed thread count.

    Yields a fresh generator seeded with `seed` for the data pipeline. The previous
    global settings are restored afterwards, so training inside a test or a larger
    program leaves no trace.
    """
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_state = torch.random.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det)
        torch.random.set_rng_state(previous_state)


def lr_factor(step: int, steps: int, warmup: int, final_fraction: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to `final_fraction`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless minibatch indices: a fresh permutation per epoch, ragged tail dropped."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def drop_labels(labels: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """`labels` with each entry replaced by `NULL_LABEL` with probability p (one uniform
    draw per entry from `generator`): label dropout for classifier-free guidance."""
    dropped = torch.rand(labels.shape, generator=generator) < p
    return labels.masked_fill(dropped, NULL_LABEL)


def edm_loss(net: EDMPrecond, y: Tensor, p_mean: float, p_std: float,
             generator: Optional[torch.Generator] = None,
             labels: Optional[Tensor] = None) -> Tensor:
    """Per-sample EDM loss lambda(sigma) ||D(y + sigma n; sigma | labels) - y||^2 / dim;
    `labels` only for a conditional network (None: unconditional)."""
    normal = torch.randn(y.shape[0], generator=generator, dtype=y.dtype)
    sigma = (normal * p_std + p_mean).exp()
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    sd = net.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    denoised = net(y + sigma.view(-1, 1, 1, 1) * noise, sigma, labels)
    return weight * (denoised - y).pow(2).flatten(1).mean(1)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source, 1 - decay)


@torch.no_grad()
def evaluate_edm_loss(net: EDMPrecond, images: Tensor, p_mean: float, p_std: float,
                      repeats: int = 8, seed: int = 1234,
                      labels: Optional[Tensor] = None) -> float:
    """Mean EDM loss over `repeats` fixed draws of (sigma, noise) per image, eval mode
    (given `labels`: conditional on them; a conditional network without: unconditional)."""
    was_training = net.training
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    total = [edm_loss(net, images, p_mean, p_std, generator, labels).mean()
             for _ in range(repeats)]
    net.train(was_training)
    return float(torch.stack(total).mean())


def _environment(threads: int) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": threads,
        "deterministic_algorithms": True,
    }


def train_score_model(out_dir: Union[str, Path], config: Optional[ScoreTrainConfig] = None,
                      log: Log = print, name: str = SCORE_MODEL_NAME,
                      on_epoch: Optional[EpochLog] = None,
                      test_every: int = 10) -> Checkpoint:
    """Train the EDM digits denoiser; write OUT_DIR/NAME.safetensors (EMA) + NAME.json.

    A conditional `config.network` trains with label dropout (module docstring).
    `on_epoch`, if given, receives after each pass over the data (training-set size //
    batch size steps) a dict: epoch, step, lr (of the epoch's last step), train_loss (mean
    minibatch loss of the epoch, labels dropped as in training), wall_s, and every
    `test_every` epochs (and after the last) test_loss_ema: the EMA weights' loss on the
    test split, one fixed draw per image, conditional on the true labels for a
    conditional model. It changes no weights: the evaluation draws from its own generator.
    """
    cfg = config or ScoreTrainConfig()
    train_x, train_y = digits.load_split("train")
    test_x, test_y = digits.load_split("test")
    test_labels = test_y if cfg.conditional else None
    steps_per_epoch = max(len(train_x) // cfg.batch_size, 1)
    start = time.perf_counter()
    with deterministic(cfg.seed, cfg.threads) as generator:
        net = EDMPrecond(cfg.network)
        ema = copy.deepcopy(net).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        index = batches(len(train_x), cfg.batch_size, generator)
        net.train()
        running = epoch_loss = 0.0
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps,
                                                 cfg.final_lr_fraction)
            batch = next(index)
            labels = (drop_labels(train_y[batch], cfg.label_dropout, generator)
                      if cfg.conditional else None)
            loss = edm_loss(net, train_x[batch], cfg.p_mean, cfg.p_std, generator,
                            labels).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Short warm-up of the EMA (as in Song et al. 2021's code) so early averages
            # are not dominated by the random initialisation.
            _ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
            running += loss.item()
            epoch_loss += loss.item()
            if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
                log(f"score step {step + 1}/{cfg.steps} loss {running / 100:.4f} "
                    f"({time.perf_counter() - start:.0f}s)")
                running = 0.0
            if on_epoch is not None and ((step + 1) % steps_per_epoch == 0
                                         or step + 1 == cfg.steps):
                epoch = -(-(step + 1) // steps_per_epoch)
                done = (step + 1) - (epoch - 1) * steps_per_epoch
                row: dict[str, Any] = {
                    "epoch": epoch, "step": step + 1,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": epoch_loss / done,
                    "wall_s": round(time.perf_counter() - start, 2)}
                if epoch % test_every == 0 or step + 1 == cfg.steps:
                    row["test_loss_ema"] = evaluate_edm_loss(
                        ema, test_x, cfg.p_mean, cfg.p_std, 1, labels=test_labels)
                on_epoch(row)
                epoch_loss = 0.0
        wall = time.perf_counter() - start
        metrics = {
            "train_wall_s": round(wall, 1),
            "train_loss_ema": evaluate_edm_loss(ema, train_x, cfg.p_mean, cfg.p_std,
                                                cfg.eval_repeats,
                                                labels=train_y if cfg.conditional else None),
            "test_loss_ema": evaluate_edm_loss(ema, test_x, cfg.p_mean, cfg.p_std,
                                               cfg.eval_repeats, labels=test_labels),
        }
        if cfg.conditional:  # the same network asked with the null class
            metrics["test_loss_ema_unconditional"] = evaluate_edm_loss(
                ema, test_x, cfg.p_mean, cfg.p_std, cfg.eval_repeats)
    log(f"score model: {metrics}")
    manifest = {
        "kind": "score_model",
        "architecture": {"name": UNET_ARCHITECTURE, "config": cfg.network.to_dict(),
                         "parameters": count_parameters(net)},
        "weights": "ema",
        "parametrization": "x0",
        "condition": "sigma",
        "preconditioning": "EDM (Karras et al. 2022, Table 1), c_noise = ln(sigma) / 4",
        "sde": {"name": "edm", "params": {"sigma_min": cfg.sigma_min,
                                          "sigma_max": cfg.sigma_max}},
        "data": digits.describe(),
        "training": {**cfg.to_dict(), "loss": "EDM denoising score matching",
                     "optimizer": "Adam", "environment": _environment(cfg.threads)},
        "metrics": metrics,
    }
    if cfg.conditional:
        manifest["labels"] = (f"classes 0..{cfg.network.num_classes - 1} (the digit); "
                              f"{NULL_LABEL} (NULL_LABEL): the null class, the last "
                              f"embedding row, trained by label dropout "
                              f"p = {cfg.label_dropout}")
    return save_checkpoint(Path(out_dir) / name, ema.state_dict(), manifest)


def _shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2."""
    if max_shift == 0:
        return x
    background = -1.0  # pixel value 0 in the [-1, 1] scale
    padded = F.pad(x, [max_shift] * 4, value=background)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    size = x.shape[-1]
    rows = [padded[i, :, dy:dy + size, dx:dx + size]
            for i, (dy, dx) in enumerate(offsets.tolist())]
    return torch.stack(rows)


def train_classifier(out_dir: Union[str, Path],
                     config: Optional[ClassifierTrainConfig] = None,
                     log: Log = print, name: str = CLASSIFIER_NAME) -> Checkpoint:
    """Train the digits classifier; write OUT_DIR/NAME.safetensors + NAME.json."""
    cfg = config or ClassifierTrainConfig()
    train_x, train_y = digits.load_split("train")
    test_x, test_y = digits.load_split("test")
    start = time.perf_counter()
    with deterministic(cfg.seed, cfg.threads) as generator:
        net = DigitsClassifier(cfg.network)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay)
        index = batches(len(train_x), cfg.batch_size, generator)
        net.train()
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps,
                                                 cfg.final_lr_fraction)
            batch = next(index)
            logits = net(_shift(train_x[batch], cfg.max_shift, generator))
            loss = F.cross_entropy(logits, train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % 250 == 0 or step + 1 == cfg.steps:
                log(f"classifier step {step + 1}/{cfg.steps} loss {loss.item():.4f}")
        net.eval()
        metrics = {
            "train_wall_s": round(time.perf_counter() - start, 1),
            "train_accuracy": accuracy(net, train_x, train_y),
            "test_accuracy": accuracy(net, test_x, test_y),
            "test_size": len(test_y),
        }
    log(f"classifier: {metrics}")
    manifest = {
        "kind": "classifier",
        "architecture": {"name": CLASSIFIER_ARCHITECTURE, "config": cfg.network.to_dict(),
                         "parameters": count_parameters(net)},
        "feature_layer": "features (input of the linear head), "
                         f"{cfg.network.features} values per image",
        "data": digits.describe(),
        "training": {**cfg.to_dict(), "loss": "cross entropy", "optimizer": "AdamW",
                     "environment": _environment(cfg.threads)},
        "metrics": metrics,
    }
    return save_checkpoint(Path(out_dir) / name, net.state_dict(), manifest)
