"""Latent models from a local pipeline folder: a tiny class-conditional DiT and a tiny
AutoencoderKL (random weights, real architectures), loaded through the registered model
`latent`, checked against diffusers driven by hand, and run through a guided suite.

Expectations are independent of the loader: the denoiser is x - sigma eps with eps the
first C channels of `transformer(sqrt(alpha_bar_n) x, n, class_labels)` at the
scheduler's own table points, the null class DiT's index K; the images are
`vae.decode(z / scaling_factor)` clamped to [-1, 1]. The suite has no reference data, so
no FID: a probe metric records what metrics see, and a slowed decoder shows that decoding
is timed apart from sampling.
"""

from __future__ import annotations

import math
import shutil
import time

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from harness import Metric, hookimpl
from harness.bench.configuration.suite import build_suite
from harness.bench.recording.sinks import FINISHED, Sinks
from harness.bench.running.plan import resolve_plan
from harness.bench.running.runner import load_model, run_plan
from harness.core.distributed import resolve_device
from harness.core.guidance import GuidedModel
from harness.core.labels import sample_labels
from harness.core.model import NULL_LABEL
from harness.core.sampling import generate
from harness.metrics.feature_space import FEATURE_SPACE_DEFAULTS, feature_space
from harness.metrics.trial_features import postprocess
from harness.models.checkpoint import CheckpointError, ChecksumError, file_sha256
from harness.plugin.manager import load_plugins

diffusers = pytest.importorskip("diffusers")

CLASSES, LATENT = 3, (4, 4, 4)
IMAGE_DIM = 3 * 8 * 8  # the decoded images, (3, 8, 8)


def _tiny_pipeline(folder):
    """A DiT of 3 classes with learned sigma (8 output channels for 4 latent channels),
    an AutoencoderKL of downsampling factor 2, and a scaled-linear DDIM schedule."""
    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=CLASSES)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, layers_per_block=1,
        sample_size=8, scaling_factor=0.5)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100,
                                        beta_schedule="scaled_linear")
    dit.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    return dit.eval(), vae.eval(), scheduler


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_dit")
    return (folder, *_tiny_pipeline(folder))


def _plugins(*extra):
    return load_plugins(extra=list(extra))


def _load(folder, **options):
    return _plugins().models.get("latent").build("cpu", path=str(folder), **options)


def test_denoiser_is_x_minus_sigma_times_dits_eps_half(pipeline):
    folder, dit, _, scheduler = pipeline
    model = _load(folder)
    assert model.num_classes == CLASSES and tuple(model.data.shape) == LATENT
    abar = scheduler.alphas_cumprod.double()
    steps = torch.tensor([0, 37, 99])
    sigma = ((1 - abar[steps]) / abar[steps]).sqrt().float()
    x = torch.randn(3, *LATENT, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([2, NULL_LABEL, 0])
    with torch.no_grad():
        x_t = abar[steps].sqrt().float().view(-1, 1, 1, 1) * x
        out = dit(x_t, timestep=steps, class_labels=torch.tensor([2, CLASSES, 0])).sample
        expected = x - sigma.view(-1, 1, 1, 1) * out[:, :4]
        null = dit(x_t, timestep=steps, class_labels=torch.full((3,), CLASSES)).sample
        got = model.denoise_labelled(x, sigma, labels)
        unconditional = model.denoise(x, sigma)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    assert torch.allclose(unconditional, x - sigma.view(-1, 1, 1, 1) * null[:, :4],
                          rtol=0, atol=1e-5)


def test_decode_is_the_vae_decoder_of_unscaled_latents(pipeline):
    folder, _, vae, _ = pipeline
    model = _load(folder)
    spec = model.output_spec
    assert tuple(spec.shape) == (3, 8, 8) and spec.value_range == (-1.0, 1.0)
    z = 3 * torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = vae.decode(z / 0.5).sample.clamp(-1, 1)
    assert torch.allclose(model.decode(z), expected, rtol=0, atol=1e-6)


def test_metrics_clamp_and_compare_decoded_images_not_latents(pipeline):
    folder = pipeline[0]
    model = _load(folder)
    images = torch.linspace(-1.5, 1.5, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    # The latent's own spec has no finite range: nothing would be clamped.
    assert torch.equal(postprocess(images, model, "clamp"), images.clamp(-1, 1))
    context = SimpleNamespace(model=model, cache={}, device="cpu")
    _, extractor = feature_space(context, {**FEATURE_SPACE_DEFAULTS, "extractor": "identity"})
    assert extractor(images).shape == (2, 3 * 8 * 8)


class _SamplesSeen(Metric):
    """Records the samples metrics are given (a probe; no reference data needed)."""

    name, unit, higher_is_better = "samples_seen", "1", False
    description = "largest |sample|, recording each trial's samples"

    def __init__(self):
        self.seen = []

    def compute(self, trial):
        self.seen.append(trial.samples.clone())
        return {self.name: float(trial.samples.abs().max())}


class _Probe:
    harness_api_version = 1

    def __init__(self):
        self.metric = _SamplesSeen()

    @hookimpl
    def harness_register_metrics(self, register):
        register(self.metric)


DECODE_PAUSE = 0.2


def test_a_guided_suite_samples_latents_and_measures_decoded_images(pipeline, tmp_path,
                                                                     monkeypatch):
    folder = pipeline[0]
    probe = _Probe()
    plugins = _plugins(("probe", probe))
    suite = build_suite({
        "model": "latent", "model_options": {"path": str(folder)},
        "samplers": {"euler": {}, "heun": {}}, "steps": [3], "num_samples": 5,
        "batch_size": 2, "device": "cpu", "dtype": "float32", "seeds": [4],
        "guidance": [2.0], "metrics": {"samples_seen": {}}}, plugins)
    device = resolve_device("cpu")
    model = load_model(suite, plugins, device)
    plan = resolve_plan(suite, plugins, model, device)
    grids = []
    from harness.bench.reporting import plots

    monkeypatch.setattr(plots, "sample_grid", lambda samples, value_range, path, title="":
                        grids.append((samples, value_range)))
    decode = model.decode

    def slow_decode(latents):  # a decoder slower than the whole of sampling
        time.sleep(DECODE_PAUSE)
        return decode(latents)

    monkeypatch.setattr(model, "decode", slow_decode)
    results = run_plan(plan, Sinks([]), artifacts_dir=tmp_path, quiet=True)

    batches = math.ceil(5 / 2)
    for entry, result in zip(plan.entries, results):
        trial, m = entry.trial, result.metrics
        assert result.status == FINISHED, result.error
        assert m["nfe"] == trial.nfe                        # guided evaluations only
        assert m["network_evals"] == 2 * trial.nfe          # doubled rows, no decoder
        assert m["network_calls"] == batches * trial.nfe
        assert m["decode_s"] >= batches * DECODE_PAUSE
        assert m["wall_clock_s"] < DECODE_PAUSE             # decoding is not sampling
    for samples, (grid, value_range) in zip(probe.metric.seen, grids):
        assert samples.shape == (5, 3, 8, 8) and torch.equal(grid, samples)
        assert value_range == (-1.0, 1.0) and float(samples.abs().max()) <= 1.0
    # The euler trial's images are the decoder's of the latents its sampler draws.
    euler = plan.entries[0]
    labels = sample_labels(4, range(5), CLASSES)
    with torch.no_grad():
        latents = generate(GuidedModel(model, labels, 2.0), euler.sampler, euler.grid, 4,
                           list(range(5)), euler.params)
    # (batches of 2 against one of 5: float32 matmuls sum in another order)
    assert torch.allclose(probe.metric.seen[0], decode(latents), rtol=0, atol=1e-5)


def test_fid_against_published_moments_needs_no_reference_data(pipeline, tmp_path):
    folder = pipeline[0]
    generator = torch.Generator().manual_seed(5)
    mu = 0.1 * torch.randn(IMAGE_DIM, dtype=torch.float64, generator=generator)
    root = torch.randn(IMAGE_DIM, IMAGE_DIM, dtype=torch.float64, generator=generator)
    sigma = root @ root.T / IMAGE_DIM + 0.05 * torch.eye(IMAGE_DIM, dtype=torch.float64)
    npz = tmp_path / "reference.npz"
    np.savez(npz, mu=mu.numpy(), sigma=sigma.numpy())
    probe = _Probe()
    plugins = _plugins(("probe", probe))
    suite = build_suite({
        "model": "latent", "model_options": {"path": str(folder)},
        "samplers": {"euler": {}}, "steps": [3], "num_samples": 40, "batch_size": 16,
        "device": "cpu", "dtype": "float32", "seeds": [0],
        "metrics": {"samples_seen": {}, "fid": {"extractor": "identity",
                                                "reference_npz": str(npz)}}}, plugins)
    device = resolve_device("cpu")
    model = load_model(suite, plugins, device)
    assert not model.reference_splits
    plan = resolve_plan(suite, plugins, model, device)
    [result] = run_plan(plan, Sinks([]), quiet=True)
    assert result.status == FINISHED, result.error

    # The Frechet distance of the decoded images' moments to the published ones, by
    # scipy's matrix square root (EDM's formula), not the harness's.
    images = probe.metric.seen[0].flatten(1).double().numpy()
    mean, cov = images.mean(0), np.cov(images, rowvar=False)
    root = scipy.linalg.sqrtm(cov @ sigma.numpy()).real
    expected = float(((mean - mu.numpy()) ** 2).sum()
                     + np.trace(cov + sigma.numpy() - 2 * root))
    assert result.metrics["fid"] == pytest.approx(expected, rel=1e-6)
    assert result.metrics["fid_num_samples"] == 40
    assert result.params["fid_reference_npz"] == str(npz)


def _copy(pipeline, tmp_path):
    folder = tmp_path / "pipeline"
    shutil.copytree(pipeline[0], folder)
    return folder


VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


def test_pinned_hashes_are_checked_before_anything_is_loaded(pipeline, tmp_path,
                                                             monkeypatch):
    folder = _copy(pipeline, tmp_path)
    right = file_sha256(folder / VAE_WEIGHTS)
    assert _load(folder, sha256=f"{VAE_WEIGHTS}:{right}").num_classes == CLASSES

    def loaded(*args, **kwargs):
        raise AssertionError("weights were read before the hash was checked")

    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", loaded)
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=f"{right}, not the pinned {wrong}"):
        _load(folder, sha256=f"{VAE_WEIGHTS}:{wrong}")
    with pytest.raises(CheckpointError, match=r"pinned file not found.*holds: .*"
                                              r"transformer/config\.json"):
        _load(folder, sha256=f"vae/model.safetensors:{right}")


def test_the_identity_names_the_decoders_weights_too(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path)
    before = _load(folder).sha256
    torch.manual_seed(9)
    vae = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae"))
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)
    vae.save_pretrained(folder / "vae")
    assert _load(folder).sha256 != before


def test_missing_parts_are_refused_with_the_folders_listing(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path)
    (folder / VAE_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=r"vae holds no \.safetensors weights"):
        _load(folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(CheckpointError, match=r"needs vae/ .*holds: .*scheduler"):
        _load(folder)
    with pytest.raises(CheckpointError, match="folder not found"):
        _load(tmp_path / "nowhere")


def test_pickled_weights_are_refused_unread(pipeline, tmp_path, monkeypatch):
    folder = _copy(pipeline, tmp_path)
    vae = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae"))
    shutil.rmtree(folder / "vae")
    vae.save_pretrained(folder / "vae", safe_serialization=False)
    assert (folder / "vae" / "diffusion_pytorch_model.bin").is_file()

    def unpickled(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(torch, "load", unpickled)
    with pytest.raises(CheckpointError, match=r"pickled weights \(diffusion_pytorch_model"
                                              r"\.bin\).*safe_serialization=True"):
        _load(folder)


def test_a_unet_in_latent_space_is_an_unconditional_latent_model(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path)
    shutil.rmtree(folder / "transformer")
    torch.manual_seed(3)
    unet = diffusers.UNet2DModel(
        sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 8),
        layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2, norm_num_groups=4).eval()
    unet.save_pretrained(folder / "unet")
    model = _load(folder)
    abar = pipeline[3].alphas_cumprod.double()
    n = 50
    sigma = math.sqrt((1 - abar[n]) / abar[n])
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eps = unet(abar[n].sqrt().float() * x, n).sample
        got = model.denoise(x, sigma)
    assert model.num_classes == 0 and tuple(model.output_spec.shape) == (3, 8, 8)
    assert torch.allclose(got, x - sigma * eps, rtol=0, atol=1e-5)
