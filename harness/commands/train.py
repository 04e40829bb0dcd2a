"""`harness train digits|classifier [--out DIR]`: retrain the shipped digits checkpoints.

The defaults reproduce the shipped files (`harness/models/weights/digits_edm.*` and
`harness/models/weights/digits_classifier.*`); on the same machine and torch build the new
weight file has the same sha256 as the shipped one (see `harness.models.training`). The command
prints the sha256 and, when a checkpoint of that name already existed in the output
folder, whether the new one is bit-identical to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

TARGETS = ("digits", "classifier")


def default_out_dir() -> Path:
    """The package's own `weights/` folder, where `harness.models.pretrained` looks."""
    return Path(__file__).resolve().parent.parent / "weights"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `train` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train", help="train the digits score model or the FID classifier (CPU)",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("target", choices=TARGETS,
                        help="digits: the EDM score network (~10 min on 1 core); "
                             "classifier: the FID feature classifier (~1 min)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the shipped location, harness/models/weights)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override the number of training steps (not reproducing the "
                             "shipped weights)")
    parser.add_argument("--seed", type=int, default=None, help="override the seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="override the thread count (changes the bits of the result)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=run)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, int]:
    return {key: value for key in ("steps", "seed", "threads")
            if (value := getattr(args, key, None)) is not None}


def _previous_sha(out_dir: Path, name: str) -> Optional[str]:
    manifest = out_dir / f"{name}.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(args: argparse.Namespace) -> int:
    """Handler of `harness train`; returns the process exit code."""
    from ..models import training
    from ..errors import ParameterError

    out_dir = Path(args.out) if args.out is not None else default_out_dir()
    overrides = _overrides(args)
    for key, value in overrides.items():
        if value < (0 if key == "seed" else 1):
            raise ParameterError(f"--{key} must be {'>= 0' if key == 'seed' else '>= 1'}, "
                                 f"got {value}")
    log = (lambda message: None) if args.quiet else print
    if args.target == "digits":
        name = training.SCORE_MODEL_NAME
        config = dataclasses.replace(training.ScoreTrainConfig(), **overrides)
        previous = _previous_sha(out_dir, name)
        checkpoint = training.train_score_model(out_dir, config, log=log)
    else:
        name = training.CLASSIFIER_NAME
        config = dataclasses.replace(training.ClassifierTrainConfig(), **overrides)
        previous = _previous_sha(out_dir, name)
        checkpoint = training.train_classifier(out_dir, config, log=log)
    print(f"wrote {checkpoint.weights_path} and {checkpoint.manifest_path.name}")
    print(f"sha256 {checkpoint.sha256}")
    print("metrics " + json.dumps(checkpoint.metrics, sort_keys=True))
    if previous is not None:
        same = "bit-identical to" if previous == checkpoint.sha256 else "DIFFERENT from"
        print(f"weights are {same} the previous {name} (sha256 {previous})")
    return 0
