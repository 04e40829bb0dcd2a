"""Published reference statistics (`.npz` with mu and sigma) stand in for the reference set.

FID against an `.npz` must equal the Fréchet distance computed independently (numpy
moments, `scipy.linalg.sqrtm`, as EDM's `fid.py` computes it) from the same moments,
and equal FID against the reference split when the file holds that split's moments. A
file in another feature space (another dimension) or without mu and sigma is refused
loudly, and so are the metrics that need the reference features rather than moments.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.linalg
import torch

import harness_plugins.metrics as metrics_plugin
from harness import SuiteContext, TrialContext, VPSDE
from harness.errors import ParameterError
from harness.metrics.reference_npz import reference_npz
from harness.models.oracle import ring_2d

METRICS = {cls.name: cls for cls in metrics_plugin.METRICS}
NUM_REFERENCE = 300


def edm_fid(mu, sigma, mu_ref, sigma_ref) -> float:
    """EDM fid.py, calculate_fid_from_inception_stats."""
    s = scipy.linalg.sqrtm(np.dot(sigma, sigma_ref))
    fid = np.square(mu - mu_ref).sum() + np.trace(sigma + sigma_ref - s * 2)
    return float(np.real(fid))


@pytest.fixture
def ring():
    return ring_2d(VPSDE()).to(dtype=torch.float64)


def trial_of(model, options, seed=1, n=150):
    """A trial whose samples are draws of the model's data (not sampled: a metric test)."""
    suite = SuiteContext(model=model, model_name="ring", device="cpu", options=options)
    samples = model.reference_data("train", n, seed=seed).data
    return TrialContext(suite=suite, sampler=None, params=None, grid=None, seed=0,
                        samples=samples)


def write_npz(path, features: np.ndarray, **extra):
    np.savez(path, mu=features.mean(0), sigma=np.cov(features, rowvar=False), **extra)
    return path


def test_fid_against_an_npz_equals_the_independent_frechet_distance(ring, tmp_path):
    gen = np.random.default_rng(0)
    published = gen.normal([0.3, -0.2], [1.1, 0.7], size=(500, 2))
    npz = write_npz(tmp_path / "ref.npz", published)
    trial = trial_of(ring, {"fid": {"reference_npz": str(npz)}})
    metric = METRICS["fid"]()
    metric.prepare(trial.suite)
    values = metric.compute(trial)
    samples = trial.samples.clamp(*ring.data.value_range).numpy()  # postprocess "clamp"
    expected = edm_fid(samples.mean(0), np.cov(samples, rowvar=False),
                       published.mean(0), np.cov(published, rowvar=False))
    assert values["fid"] == pytest.approx(expected, rel=1e-9)
    assert values["fid_num_samples"] == 150 and "fid_num_reference" not in values
    params = metric.params()
    assert params["fid_reference_npz"] == str(npz)
    sha256 = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert params["fid_reference_npz_sha256"] == sha256
    assert params["fid_extractor"] == "identity" and params["fid_preprocess"] == "none"


def test_an_npz_of_the_reference_split_gives_the_splits_fid(ring, tmp_path):
    reference = ring.reference_data("test", NUM_REFERENCE).data.numpy()
    npz = write_npz(tmp_path / "test_split.npz", reference)
    cache = str(tmp_path / "cache")
    by_split = trial_of(ring, {"fid": {"num_reference": NUM_REFERENCE, "cache_dir": cache}})
    by_npz = trial_of(ring, {"fid": {"reference_npz": str(npz)}})
    values = []
    for trial in (by_split, by_npz):
        metric = METRICS["fid"]()
        metric.prepare(trial.suite)
        values.append(metric.compute(trial)["fid"])
    assert values[1] == pytest.approx(values[0], rel=1e-9)


def test_adm_reference_batches_are_read_for_mu_and_sigma(tmp_path):
    features = np.random.default_rng(1).normal(size=(40, 3))
    npz = write_npz(tmp_path / "VIRTUAL_tiny.npz", features, mu_s=np.zeros(5),
                    sigma_s=np.eye(5), arr_0=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    reference = reference_npz(npz, 3)
    assert np.array_equal(reference.mean.numpy(), features.mean(0))
    assert np.array_equal(reference.cov.numpy(), np.cov(features, rowvar=False))
    assert reference.mean.dtype == torch.float64 and reference.n is None


def test_an_npz_of_another_feature_dimension_is_refused(ring, tmp_path):
    npz = write_npz(tmp_path / "four.npz", np.random.default_rng(2).normal(size=(9, 4)))
    with pytest.raises(ParameterError, match=r"other feature space: mu \(4,\) .* gives 3"):
        reference_npz(npz, 3)
    trial = trial_of(ring, {"fid": {"reference_npz": str(npz)}})
    with pytest.raises(ParameterError, match="extractor gives 2 features"):
        METRICS["fid"]().prepare(trial.suite)


def test_an_npz_without_mu_and_sigma_is_refused(tmp_path):
    np.savez(tmp_path / "features.npz", arr_0=np.zeros((3, 2)), mu=np.zeros(2))
    with pytest.raises(ParameterError, match="have no sigma .keys: arr_0, mu."):
        reference_npz(tmp_path / "features.npz", 2)


@pytest.mark.parametrize("name", ["kid", "fid_inf"])
def test_metrics_that_need_reference_features_refuse_an_npz(ring, tmp_path, name):
    npz = write_npz(tmp_path / "ref.npz", np.random.default_rng(3).normal(size=(9, 2)))
    trial = trial_of(ring, {name: {"reference_npz": str(npz)}})
    with pytest.raises(ParameterError, match="needs the reference set's features"):
        METRICS[name]().prepare(trial.suite)
