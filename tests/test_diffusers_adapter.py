"""A local diffusers UNet2DModel behind the ScoreModel interface: schedule mapping and D."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.models.diffusers_model import (
    DiffusersUNetModel, DiscreteVPSDE, MissingDependencyError, load_diffusers_unet,
    sigmas_from_alphas_cumprod,
)
from harness.core.counting import CountedModel
from harness.core.model import NULL_LABEL
from harness.errors import ParameterError
from harness.core.sde import VPSDE
from harness.plugin.manager import get_plugins


def _tiny_unet(diffusers, **extra):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **extra)


@pytest.fixture(scope="module")
def diffusers():
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def saved(diffusers, tmp_path_factory):
    """A randomly initialised UNet and a cosine-schedule DDPM scheduler, saved locally."""
    folder = tmp_path_factory.mktemp("tiny_unet")
    unet = _tiny_unet(diffusers)
    unet.save_pretrained(folder)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=200,
                                        beta_schedule="squaredcos_cap_v2")
    scheduler.save_pretrained(folder)
    return folder, unet.eval(), scheduler


def test_sigma_timestep_mapping_is_exact_at_table_points(saved):
    folder, _, scheduler = saved
    model = load_diffusers_unet(folder)
    abar = scheduler.alphas_cumprod.double()
    n = torch.arange(len(abar))
    sigmas = ((1 - abar) / abar).sqrt()
    assert torch.equal(model.sigmas, sigmas)
    assert torch.allclose(model.timestep_of_sigma(sigmas), n.double(), rtol=0, atol=1e-9)
    # Between table points the timestep interpolates ln(sigma); outside, it is clamped.
    mid = (sigmas[10].log() + sigmas[11].log()).mul(0.5).exp()
    assert float(model.timestep_of_sigma(mid.view(1))) == pytest.approx(10.5, abs=1e-9)
    ends = model.timestep_of_sigma(torch.tensor([1e-6, 1e6], dtype=torch.float64))
    assert ends.tolist() == [0.0, len(abar) - 1.0]
    # The SDE passes through the table: s(t_n)^2 = alpha_bar_n at t_n = (n + 1) / N.
    t = (n.double() + 1) / len(abar)
    sde = model.sde
    assert isinstance(sde, DiscreteVPSDE)
    assert torch.allclose(sde.scale(t) ** 2, abar, rtol=1e-12, atol=0)
    assert torch.allclose(sde.sigma(t), sigmas, rtol=1e-12, atol=0)
    assert torch.allclose(sde.t_of_sigma(sigmas), t, rtol=1e-12, atol=1e-15)
    for k in (0, 57, len(abar) - 1):  # the float fast path agrees
        assert sde.scale(float(t[k])) ** 2 == pytest.approx(float(abar[k]), rel=1e-12)
        assert sde.t_of_sigma(float(sigmas[k])) == pytest.approx(float(t[k]), rel=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "fractional"])
def test_denoiser_is_x_minus_sigma_eps_of_the_unet(saved, mode):
    folder, unet, scheduler = saved
    model = load_diffusers_unet(folder, timestep_mode=mode)
    abar = scheduler.alphas_cumprod.double()
    timesteps = torch.tensor([0, 17, 100, 199])
    sigma = ((1 - abar[timesteps]) / abar[timesteps]).sqrt().float()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    counted = CountedModel(model)
    denoised = counted.denoise(x, sigma)
    assert counted.nfe.calls == 1 and counted.nfe.rows == 4
    s = (1 / (1 + sigma**2).sqrt()).view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = unet(s * x, timesteps).sample
    expected = x - sigma.view(-1, 1, 1, 1) * eps
    # s equals sqrt(alpha_bar_n) at the table points:
    assert torch.allclose(s.flatten().double(), abar[timesteps].sqrt(), rtol=1e-6)
    tolerance = 0.0 if mode == "nearest" else 1e-5  # float32 sigma moves n by ~1e-5
    assert torch.allclose(denoised, expected, rtol=0, atol=tolerance)


def test_score_and_ode_drift_use_the_discrete_sde(saved):
    folder, _, _ = saved
    model = load_diffusers_unet(folder)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = 0.4
    s, sigma = model.sde.scale(t), model.sde.sigma(t)
    score = model.score(x, t)
    expected = (s * model._denoise(x / s, torch.full((3,), sigma)) - x) / (s * sigma) ** 2
    assert torch.allclose(score, expected, atol=1e-5)
    assert torch.isfinite(model.ode_drift(x, torch.full((3,), t))).all()
    assert model.data.shape == (1, 8, 8)


def test_default_schedule_and_pipeline_layout(diffusers, tmp_path):
    _tiny_unet(diffusers).save_pretrained(tmp_path / "bare")
    model = load_diffusers_unet(tmp_path / "bare")
    reference = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4,
                                        beta_end=0.02, beta_schedule="linear")
    assert torch.equal(model.sde.alphas_cumprod, reference.alphas_cumprod.double())
    # The linear DDPM schedule is, to first order, VPSDE(0.1, 20) at t = (n + 1) / N.
    vp = VPSDE(beta_min=0.1, beta_max=20.0)
    for t in (0.1, 0.5, 0.9):
        assert model.sde.scale(t) == pytest.approx(vp.scale(t), rel=0.05)
    _tiny_unet(diffusers).save_pretrained(tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction") \
        .save_pretrained(tmp_path / "pipe" / "scheduler")
    pipe = load_diffusers_unet(tmp_path / "pipe")
    assert pipe.sde.num_timesteps == 50 and pipe.prediction_type == "v_prediction"


def test_v_prediction_reads_x0_as_alpha_xt_minus_sigma_v(diffusers, tmp_path):
    unet = _tiny_unet(diffusers).eval()
    unet.save_pretrained(tmp_path)
    scheduler = diffusers.DDPMScheduler(prediction_type="v_prediction")
    scheduler.save_pretrained(tmp_path)
    model = load_diffusers_unet(tmp_path, timestep_mode="nearest")
    n = torch.tensor([300, 300])
    abar = scheduler.alphas_cumprod[n].double()
    sigma = ((1 - abar) / abar).sqrt().float()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x_t = x / (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
    with torch.no_grad():
        v = unet(x_t, n).sample
    alpha, sd = abar.sqrt().float().view(-1, 1, 1, 1), (1 - abar).sqrt().float().view(-1, 1, 1, 1)
    assert torch.allclose(model.denoise(x, sigma), alpha * x_t - sd * v, atol=1e-5)


def test_bad_folders_are_refused(tmp_path):
    pytest.importorskip("diffusers")
    with pytest.raises(ParameterError, match="not found"):
        load_diffusers_unet(tmp_path / "missing")
    with pytest.raises(ParameterError, match="no diffusers UNet"):
        load_diffusers_unet(tmp_path)


def test_missing_diffusers_says_to_install_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[diffusers\]"):
        load_diffusers_unet(tmp_path)


def test_discrete_sde_validates_its_table():
    with pytest.raises(ParameterError, match="decreasing"):
        DiscreteVPSDE([0.5, 0.9])
    with pytest.raises(ParameterError, match=r"\(0, 1\)"):
        DiscreteVPSDE([1.0, 0.5])
    sde = DiscreteVPSDE(torch.tensor([0.9, 0.5, 0.1]))
    assert sde.sigma(0.0) == 0.0 and sde.scale(0.0) == 1.0
    # Derivatives are those of the interpolation: check against finite differences.
    t, h = 0.5, 1e-7
    assert sde.sigma_derivative(t) == pytest.approx(
        (sde.sigma(t + h) - sde.sigma(t - h)) / (2 * h), rel=1e-5)
    assert sde.diffusion_squared(t) == pytest.approx(
        2 * sde.scale(t) ** 2 * sde.sigma(t) * sde.sigma_derivative(t), rel=1e-9)
    assert torch.equal(sigmas_from_alphas_cumprod(torch.tensor([0.5])),
                       torch.tensor([1.0], dtype=torch.float64))


# --- class-conditional UNets (num_class_embeds) ------------------------------------------

@pytest.fixture(scope="module")
def saved_conditional(diffusers, tmp_path_factory):
    """A random UNet with 5 class embeddings (4 classes and the null class), saved."""
    folder = tmp_path_factory.mktemp("tiny_cond_unet")
    unet = _tiny_unet(diffusers, num_class_embeds=5)
    unet.save_pretrained(folder)
    diffusers.DDPMScheduler(num_train_timesteps=100).save_pretrained(folder)
    return folder, unet.eval()


def _expected(unet, model, x, sigma, class_index):
    """D = x - sigma eps, eps from the UNet called directly with its own class indices."""
    s = (1 / (1 + sigma**2).sqrt()).view(-1, 1, 1, 1)
    timestep = model.timestep_of_sigma(sigma).float()
    with torch.no_grad():
        eps = unet(s * x, timestep, class_labels=class_index).sample
    return x - sigma.view(-1, 1, 1, 1) * eps


def test_class_embeddings_make_a_conditional_model_with_the_last_index_null(saved_conditional):
    folder, unet = saved_conditional
    model = load_diffusers_unet(folder)
    assert model.num_classes == 4 and model.null_class == 4
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 1.0])
    labels = torch.tensor([0, 1, 2, 3, NULL_LABEL, NULL_LABEL])
    counted = CountedModel(model)
    out = counted.denoise_labelled(x, sigma, labels)
    assert counted.nfe.calls == 1 and counted.nfe.rows == 6
    expected = _expected(unet, model, x, sigma, torch.tensor([0, 1, 2, 3, 4, 4]))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # The plain denoiser is the null class's; the labels change the output.
    plain = model.denoise(x, sigma)
    torch.testing.assert_close(plain, _expected(unet, model, x, sigma, torch.full((6,), 4)),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(out[4:], plain[4:], rtol=0, atol=1e-6)
    same_x = x[:1].expand(4, 1, 8, 8)
    per_class = model.denoise_labelled(same_x, 1.0, torch.arange(4))
    gaps = (per_class[:, None] - per_class[None]).flatten(2).abs().amax(2)
    assert gaps[~torch.eye(4, dtype=torch.bool)].min() > 1e-4
    # A mixed batch is its rows one by one.
    rows = torch.cat([model.denoise_labelled(x[i:i + 1], sigma[i:i + 1], labels[i:i + 1])
                      for i in range(6)])
    torch.testing.assert_close(out, rows, rtol=0, atol=1e-5)
    with pytest.raises(ParameterError, match=r"labels must be in 0\.\.3"):
        model.denoise_labelled(x[:1], 1.0, torch.tensor([4]))


def test_the_null_class_can_be_another_index(saved_conditional):
    folder, unet = saved_conditional
    model = load_diffusers_unet(folder, null_class=0)
    assert model.num_classes == 4 and model.null_class == 0
    # Labels 0..3 are the UNet's indices 1..4 (the null index skipped), NULL_LABEL is 0.
    assert model.class_index(torch.tensor([0, 1, 2, 3, NULL_LABEL])).tolist() == [1, 2, 3, 4, 0]
    middle = load_diffusers_unet(folder, null_class=2)
    assert middle.class_index(torch.tensor([0, 1, 2, 3, NULL_LABEL])).tolist() == [0, 1, 3, 4, 2]
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.7, 0.7])
    torch.testing.assert_close(model.denoise(x, sigma),
                               _expected(unet, model, x, sigma, torch.zeros(2, dtype=torch.long)),
                               rtol=0, atol=1e-5)
    # Through the registered model, with the option as a suite file may spell it.
    spec = get_plugins().models.get("diffusers")
    built = spec.build("cpu", path=str(folder), null_class="0")
    assert built.null_class == 0 and built.num_classes == 4
    for bad in (5, -1):
        with pytest.raises(ParameterError, match="null_class must be a class index"):
            load_diffusers_unet(folder, null_class=bad)
    with pytest.raises(ParameterError, match="null_class must be an integer"):
        spec.build("cpu", path=str(folder), null_class="last")


def test_unconditional_unets_take_no_null_class_and_other_embeddings_are_refused(
        saved, diffusers, tmp_path):
    folder, _, _ = saved
    model = load_diffusers_unet(folder)
    assert model.num_classes == 0 and model.null_class is None
    with pytest.raises(ParameterError, match="not a conditional model"):
        model.denoise_labelled(torch.zeros(1, 1, 8, 8), 1.0, torch.tensor([0]))
    with pytest.raises(ParameterError, match="no class embeddings"):
        load_diffusers_unet(folder, null_class=0)
    _tiny_unet(diffusers, class_embed_type="timestep").save_pretrained(tmp_path)
    with pytest.raises(ParameterError, match="class_embed_type 'timestep' is not supported"):
        load_diffusers_unet(tmp_path)
    with pytest.raises(ParameterError, match="num_class_embeds = 1 >= 2"):
        DiffusersUNetModel(_tiny_unet(diffusers, num_class_embeds=1), [0.9, 0.5])
