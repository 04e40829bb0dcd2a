"""The real-data floor: the suite's set metrics computed on held-out real data.

With one fixed reference set, every sampler's FID or KID shares that set's sampling
error, and at small N even real data score far from zero (128 real training digits
against the 355 test digits give FID 15-24). A sampler is only as good as it can be shown
to be: the floor row ("data") gives the same metrics on N held-out real samples (the
model's "train" split, never the reference split), over several draws, so that a reader
sees which sampler rows cannot be told apart from real data at this N.

Floor trials go through the runner and the sinks like any trial (sampler name "data",
kind "floor", no NFE), each with its own configuration hash, so `--resume` keeps them.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ...core import distributed
from ...core.model import ScoreModel
from ...plugin.manager import LoadedPlugins
from ..configuration.code_identity import code_versions
from ..configuration.suite import Suite, Trial, canonical_hash
from ..recording.record import FLOOR_NAME

#: The split the floor draws from; the set metrics' reference is another ("test").
FLOOR_SPLIT = "train"
#: Draws of the floor when the suite has fewer seeds (its spread needs a few).
MIN_DRAWS = 4


def floor_trials(suite: Suite, plugins: LoadedPlugins, model: ScoreModel,
                 model_identity: Mapping[str, Any]) -> list[Trial]:
    """One floor trial per draw, max(len(seeds), MIN_DRAWS) draws of num_samples each;
    none when the model has no held-out real data (a "train" reference split), fewer of
    them than the suite's num_samples, or the suite has no metric that applies to real
    data (`Metric.on_real_data`)."""
    if FLOOR_SPLIT not in model.reference_splits or not any(
            getattr(plugins.metrics.get(name), "on_real_data", False)
            for name in suite.metrics):
        return []
    available = model.reference_data(FLOOR_SPLIT, None, seed=0).data.shape[0]
    if available < suite.num_samples:  # real data cannot match this N: no floor row
        distributed.print0(f"note: no real-data floor row: the {FLOOR_SPLIT!r} split holds {available} "
              f"samples, fewer than num_samples = {suite.num_samples}", file=sys.stderr)
        return []
    draws = max(len(suite.seeds), MIN_DRAWS)
    trials = []
    for draw in range(draws):
        config = {"kind": "floor", "model": dict(model_identity), "split": FLOOR_SPLIT,
                  "dtype": suite.dtype,
                  "code": code_versions(plugins, None, suite.model, suite.metrics),
                  "draw": draw, "num_samples": suite.num_samples, "metrics": suite.metrics}
        trials.append(Trial(name=f"{FLOOR_NAME}-draw{draw}", sampler=FLOOR_NAME, params={},
                            varied={}, steps=0, nfe=0, seed=draw, config=config,
                            config_hash=canonical_hash(config), kind="floor"))
    return trials


def held_out(model: ScoreModel, num: int, draw: int) -> tuple[Tensor, Optional[Tensor]]:
    """`num` real samples of the floor split, chosen without replacement by `draw`, and
    their classes when the data have them (a conditional model's), else None."""
    reference = model.reference_data(FLOOR_SPLIT, None, seed=draw)
    pool = reference.data
    if pool.shape[0] < num:
        raise ValueError(f"the {FLOOR_SPLIT!r} split has {pool.shape[0]} samples, fewer "
                         f"than the suite's num_samples = {num}: no floor at this N")
    order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(draw))
    chosen = order[:num]
    labels = None if reference.labels is None else reference.labels[chosen]
    return pool[chosen], labels
