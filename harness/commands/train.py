"""`harness train digits|digits-cond|classifier [--out DIR]`: retrain the shipped digits
checkpoints.

The defaults reproduce the shipped files (`harness/models/weights/digits_edm.*`, the
class-conditional `digits_edm_cond.*` and `digits_classifier.*`); on the same machine and
torch build the new weight file has the same sha256 as the shipped one (see
`harness.models.training`). They are written to `runs/weights/` unless `--out` says
otherwise: the shipped files are part of the committed tree and are replaced only on
purpose (`--out harness/models/weights` in a checkout). The command prints the sha256 and
whether it is bit-identical to the checkpoint of that name already in the output folder,
else to the shipped one. `--curve FILE.csv` writes a score model's training curve, one row
per epoch.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

TARGETS = ("digits", "digits-cond", "classifier")
#: Columns of `--curve`; test_loss_ema is filled every `TEST_EVERY` epochs and at the end.
CURVE_COLUMNS = ("epoch", "step", "lr", "train_loss", "test_loss_ema", "wall_s")
TEST_EVERY = 10


#: Where checkpoints go unless `--out` says otherwise (relative to the working directory).
DEFAULT_OUT = Path("runs") / "weights"


def shipped_dir() -> Path:
    """The package's own `weights/` folder, where `harness.models.pretrained` looks."""
    return Path(__file__).resolve().parent.parent / "models" / "weights"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `train` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train", help="train the digits score model or the FID classifier (CPU)",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("target", choices=TARGETS,
                        help="digits: the EDM score network (~10 min on 1 core); "
                             "digits-cond: its class-conditional sibling, trained with "
                             "label dropout (as long); "
                             "classifier: the FID feature classifier (~1 min)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {DEFAULT_OUT}/; the shipped "
                             f"checkpoints are replaced only by naming their folder)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override the number of training steps (not reproducing the "
                             "shipped weights)")
    parser.add_argument("--seed", type=int, default=None, help="override the seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="override the thread count (changes the bits of the result)")
    parser.add_argument("--label-dropout", type=float, default=None, metavar="P",
                        help="digits-cond: probability that a training label is replaced "
                             "by the null class (default 0.1)")
    parser.add_argument("--curve", type=Path, default=None, metavar="FILE.csv",
                        help="digits, digits-cond: write the loss per epoch to this CSV "
                             f"(test loss of the EMA weights every {TEST_EVERY} epochs)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=run)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, int]:
    return {key: value for key in ("steps", "seed", "threads")
            if (value := getattr(args, key, None)) is not None}


class _CurveWriter:
    """Appends each epoch's row to a CSV as it comes, so a stopped run keeps its curve."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, CURVE_COLUMNS, restval="")
        self.writer.writeheader()

    def __call__(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _previous_sha(out_dir: Path, name: str) -> tuple[Optional[str], str]:
    """(sha256, which) of the checkpoint `name` the new one is compared with: the one
    already in `out_dir`, else the shipped one."""
    for folder, which in ((out_dir, "previous"), (shipped_dir(), "shipped")):
        manifest = folder / f"{name}.json"
        try:
            return str(json.loads(manifest.read_text(encoding="utf-8"))["sha256"]), which
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None, ""


def run(args: argparse.Namespace) -> int:
    """Handler of `harness train`; returns the process exit code."""
    from ..models import training
    from ..errors import ParameterError

    out_dir = Path(args.out) if args.out is not None else DEFAULT_OUT
    overrides: dict[str, Any] = _overrides(args)
    for key, value in overrides.items():
        if value < (0 if key == "seed" else 1):
            raise ParameterError(f"--{key} must be {'>= 0' if key == 'seed' else '>= 1'}, "
                                 f"got {value}")
    dropout = getattr(args, "label_dropout", None)
    curve = getattr(args, "curve", None)
    if dropout is not None and args.target != "digits-cond":
        raise ParameterError("--label-dropout applies to digits-cond only")
    if dropout is not None and not 0.0 <= dropout <= 1.0:
        raise ParameterError(f"--label-dropout must be in [0, 1], got {dropout}")
    if curve is not None and args.target == "classifier":
        raise ParameterError("--curve applies to the score models (digits, digits-cond)")
    log = (lambda message: None) if args.quiet else print
    if args.target in ("digits", "digits-cond"):
        conditional = args.target == "digits-cond"
        name = training.CONDITIONAL_MODEL_NAME if conditional else training.SCORE_MODEL_NAME
        base = training.CONDITIONAL_SCORE_CONFIG if conditional else training.ScoreTrainConfig()
        if dropout is not None:
            overrides["label_dropout"] = dropout
        config = dataclasses.replace(base, **overrides)
        previous, which = _previous_sha(out_dir, name)
        writer = _CurveWriter(curve) if curve is not None else None
        try:
            checkpoint = training.train_score_model(out_dir, config, log=log, name=name,
                                                    on_epoch=writer, test_every=TEST_EVERY)
        finally:
            if writer is not None:
                writer.close()
    else:
        name = training.CLASSIFIER_NAME
        config = dataclasses.replace(training.ClassifierTrainConfig(), **overrides)
        previous, which = _previous_sha(out_dir, name)
        checkpoint = training.train_classifier(out_dir, config, log=log)
    print(f"wrote {checkpoint.weights_path} and {checkpoint.manifest_path.name}")
    print(f"sha256 {checkpoint.sha256}")
    if curve is not None:
        print(f"training curve in {curve}")
    print("metrics " + json.dumps(checkpoint.metrics, sort_keys=True))
    if previous is not None:
        same = "bit-identical to" if previous == checkpoint.sha256 else "DIFFERENT from"
        print(f"weights are {same} the {which} {name} (sha256 {previous})")
    return 0
