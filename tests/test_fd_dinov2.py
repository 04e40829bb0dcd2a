"""FD_DINOv2 beside FID in one suite (`fd_dinov2`, as EDM2 reports both).

The expectation is independent of the harness's feature code: the trial's samples as the
PNG files it wrote (`--save-samples`, EDM's quantisation) read back with PIL, EDM2's
DINOv2 preprocessing and a forward pass spelt out from the state dict
(`tests/test_feature_extractors.py`), and the Frechet distance by scipy's `sqrtm`.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from harness.bench.configuration.suite import build_suite
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.errors import ParameterError
from harness.metrics.dinov2 import load_dinov2
from harness.plugin import manager as plugin_manager
from tests.plugins import gaussian_images
from tests.test_feature_extractors import (
    TINY,
    edm2_dinov2_input,
    random_state,
    reference_forward,
)

NUM_SAMPLES = 80


class Recorder:
    def suite_started(self, info):
        pass


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def dinov2_input_from_png(files) -> torch.Tensor:
    """EDM2's DINOv2Detector input from 8-bit image files."""
    images = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB"))
                                        for f in files])).permute(0, 3, 1, 2).float()
    images = F.interpolate(images, size=(224, 224), mode="bicubic", antialias=True) / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    return (images - mean) / std


@pytest.fixture()
def tiny_dinov2(tmp_path):
    state = random_state(TINY)
    path = tmp_path / "dinov2_tiny.pth"
    torch.save(state, path)
    with mock.patch("harness.metrics.feature_space.load_dinov2",
                    lambda weights, expected_sha256: load_dinov2(weights, TINY,
                                                                 expected_sha256)):
        yield path, state


def run(tmp_path, metrics: dict, stream: bool = False):
    plugins = plugin_manager.load_plugins(extra=[("gaussian_images", gaussian_images)])
    suite = build_suite({"model": "gaussian-images", "samplers": {"euler": {}},
                         "steps": [2], "num_samples": NUM_SAMPLES, "batch_size": 32,
                         "device": "cpu", "metrics": metrics, "stream": stream}, plugins)
    device = torch.device("cpu")
    plan = resolve_plan(suite, plugins, load_model(suite, plugins, device), device)
    out = tmp_path / ("streamed" if stream else "held")
    results = run_plan(plan, Sinks([Recorder()]), artifacts_dir=out / "grids", quiet=True,
                       samples_dir=out / "images")
    [result] = [r for r in results if r.trial.kind != "floor"]
    assert result.status == FINISHED, result.error
    return result, out / "images" / result.trial.name


def test_fd_dinov2_is_the_frechet_distance_of_dinov2_features_beside_fid(tmp_path,
                                                                          tiny_dinov2):
    weights, state = tiny_dinov2
    metrics = {"fid": {"cache_dir": str(tmp_path)},
               "fd_dinov2": {"dinov2_weights": str(weights), "cache_dir": str(tmp_path)}}
    result, images = run(tmp_path, metrics)
    files = sorted(images.rglob("*.png"))
    assert len(files) == NUM_SAMPLES
    with torch.no_grad():
        ours = reference_forward(state, TINY, dinov2_input_from_png(files)).double().numpy()
        reference = gaussian_images.GaussianImages().reference_data("test", None, 0).data
        theirs = reference_forward(state, TINY, edm2_dinov2_input(reference)).double().numpy()
    expected = frechet(ours, theirs)
    assert result.metrics["fd_dinov2"] == pytest.approx(expected, rel=1e-4)
    assert result.metrics["fd_dinov2_num_samples"] == NUM_SAMPLES
    assert result.metrics["fd_dinov2_num_reference"] == len(reference)
    # Each its own space: FID is in the model's 64 features, and both have intervals.
    assert result.params["fid_extractor"] != result.params["fd_dinov2_extractor"]
    assert result.metrics["fid"] != pytest.approx(result.metrics["fd_dinov2"])
    assert {"fid", "fd_dinov2"} <= set(result.replicates)
    assert {"fid_bias", "fd_dinov2_bias"} <= set(result.metrics)

    # Streamed, the same two numbers (each feature space extracted as the batches come).
    streamed, _ = run(tmp_path, metrics, stream=True)
    for key in ("fid", "fd_dinov2"):
        assert streamed.metrics[key] == pytest.approx(result.metrics[key], rel=1e-12)


def test_fd_dinov2_refuses_another_feature_space(tmp_path):
    plugins = plugin_manager.load_plugins(extra=[("gaussian_images", gaussian_images)])
    metric = plugins.metrics.get("fd_dinov2")
    suite = mock.Mock(options={"fd_dinov2": {"extractor": "inception"}})
    with pytest.raises(ParameterError, match="its extractor is 'dinov2', not 'inception'"):
        metric.prepare(suite)
