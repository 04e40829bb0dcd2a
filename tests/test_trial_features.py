"""A trial's samples go through each feature extractor once, whatever the number of set
metrics that read their features (harness/metrics/trial_features.py), and the values do
not depend on that sharing: the same in any order of metrics, the same as torchmetrics'
FID on the same features, the same when two torchrun processes each extract their share.

The extractor is wrapped here in a module that counts the rows it is given, apart from
the cache's own counter. Run as `python -m tests.test_trial_features --out PATH` under
torchrun, this module is also the worker of the two-process test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from harness import Bootstrap, SuiteContext, TrialContext
from harness.metrics import IdentityFeatures
from harness.core import distributed
from harness.plugin.manager import get_plugins
from tests.conditional_support import labelled_ring

ROOT = Path(__file__).resolve().parents[1]
#: Every metric that reads the samples' features (class accuracy uses a classifier).
FEATURE_METRICS = ("fid", "fid_inf", "kid", "class_fid", "precision", "recall")
NUM_SAMPLES = 161  # odd: two processes' shares differ in size
NUM_REFERENCE = 400
LAUNCH_LIMIT_S = 240  # generous on a shared machine; it normally takes ~15 s


class CountingFeatures(nn.Module):
    """The flattened samples as features, counting every row passed through."""

    def __init__(self, dim: int):
        super().__init__()
        self.identity = IdentityFeatures(dim)
        self.sha256, self.num_features = self.identity.sha256, dim
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.identity(x)


def counted_model():
    """The labelled ring oracle whose feature extractor counts its rows."""
    model = labelled_ring()
    counter = CountingFeatures(model.data.dim)
    model.feature_extractor = lambda device="cpu": counter
    return model, counter


def prepared(model, cache_dir, names=FEATURE_METRICS):
    """The suite and its metrics, prepared (the reference features extracted)."""
    small = {"fid_inf": {"draws": 4}, "kid": {"subset_size": 100, "subsets": 5}}
    options = {name: {"num_reference": NUM_REFERENCE, "cache_dir": str(cache_dir),
                      **small.get(name, {})} for name in names}
    suite = SuiteContext(model=model, model_name="labelled-ring", device="cpu",
                         options=options)
    metrics = {name: get_plugins().metrics.get(name) for name in names}
    for metric in metrics.values():
        metric.prepare(suite)
    return suite, metrics


def samples_of(model, n=NUM_SAMPLES, seed=1):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % model.num_classes
    return model.sample_class(labels, gen), labels


def trial_of(suite, samples, labels, bootstrap=True):
    return TrialContext(suite=suite, sampler=None, params=None, grid=None, seed=0,
                        samples=samples, labels=labels,
                        bootstrap=Bootstrap(samples.shape[0]) if bootstrap else None)


def test_one_pass_over_the_samples_for_every_feature_metric(tmp_path):
    model, counter = counted_model()
    suite, metrics = prepared(model, tmp_path)
    assert counter.rows == NUM_REFERENCE  # the reference set, once for the whole suite
    samples, labels = samples_of(model)
    trial = trial_of(suite, samples, labels)
    counter.rows = 0
    values = {}
    for metric in metrics.values():
        values.update(metric.compute(trial))
    assert counter.rows == NUM_SAMPLES
    assert trial.feature_cache.extractions == 1
    assert {"fid", "fid_bias", "fid_inf", "kid", "class_fid", "precision",
            "recall"} <= set(values)
    assert set(trial.bootstrap.values) >= {"fid", "fid_inf", "kid", "class_fid",
                                           "precision"}


def test_another_postprocessing_is_another_feature_space(tmp_path):
    model, counter = counted_model()
    suite, metrics = prepared(model, tmp_path, names=("fid", "kid"))
    suite.options["kid"]["postprocess"] = "none"
    metrics["kid"].prepare(suite)
    trial = trial_of(suite, *samples_of(model), bootstrap=False)
    counter.rows = 0
    for metric in metrics.values():
        metric.compute(trial)
    assert counter.rows == 2 * NUM_SAMPLES and trial.feature_cache.extractions == 2


def test_metrics_are_pure_functions_of_the_features(tmp_path):
    model, _ = counted_model()
    suite, metrics = prepared(model, tmp_path, names=("fid", "kid"))
    samples, labels = samples_of(model)
    shared = trial_of(suite, samples, labels, bootstrap=False)
    first = metrics["fid"].compute(shared)
    kid = metrics["kid"].compute(shared)
    assert metrics["fid"].compute(shared) == first
    alone = trial_of(suite, samples, labels, bootstrap=False)
    assert metrics["kid"].compute(alone) == kid


def test_fid_of_a_trial_equals_torchmetrics_on_the_same_samples(tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    model, _ = counted_model()
    suite, metrics = prepared(model, tmp_path, names=("fid",))
    samples, labels = samples_of(model)
    value = metrics["fid"].compute(trial_of(suite, samples, labels, bootstrap=False))
    reference = FrechetInceptionDistance(feature=IdentityFeatures(model.data.dim))
    reference.update(model.reference_data("test", NUM_REFERENCE, 0).data, real=True)
    reference.update(samples, real=False)  # the ring's values are not clamped
    assert value["fid"] == pytest.approx(float(reference.compute()), rel=1e-9)


# --- two processes ---------------------------------------------------------------------

def measure(cache_dir) -> dict:
    """Set metrics of one trial on this process, and the rows its extractor saw."""
    model, counter = counted_model()
    suite, metrics = prepared(model, cache_dir, names=("fid", "kid", "fid_inf"))
    trial = trial_of(suite, *samples_of(model))
    counter.rows = 0
    values = {}
    for metric in metrics.values():
        values.update(metric.compute(trial))
    return {"values": values, "rows": counter.rows,
            "extractions": trial.feature_cache.extractions,
            "world_size": distributed.world_size()}


def test_two_processes_each_extract_their_share_and_agree(tmp_path):
    out = tmp_path / "two.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "tests.test_trial_features", "--out", str(out),
               "--cache", str(tmp_path / "two")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_LIMIT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = torch.load(out, weights_only=False)
    one = measure(tmp_path / "one")
    assert [r["world_size"] for r in ranks] == [2, 2] and one["world_size"] == 1
    assert [r["rows"] for r in ranks] == [(NUM_SAMPLES + 1) // 2, NUM_SAMPLES // 2]
    assert [r["extractions"] for r in ranks] == [1, 1]
    for rank in ranks:
        assert set(rank["values"]) == set(one["values"])
        for key, value in one["values"].items():
            assert rank["values"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def main() -> None:
    parser = argparse.ArgumentParser(description="the two-process worker")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    distributed.init()
    try:
        mine = measure(args.cache)
        every: list = [None] * distributed.world_size()
        torch.distributed.all_gather_object(every, mine)
        if distributed.rank() == 0:
            torch.save(every, args.out)
    except BaseException:
        distributed.shutdown(clean=False)
        raise
    distributed.shutdown()


if __name__ == "__main__":
    main()
