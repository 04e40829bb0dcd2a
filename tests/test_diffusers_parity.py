"""diffusers:<Scheduler> equals diffusers' own sampling loop driven by hand.

The reference is a pipeline's loop written out here (`pipeline`): a fresh scheduler,
`set_timesteps`, then per timestep `scale_model_input`, one call of a DDPM network and
`step`. Its network is

* on the oracle (the 64-D Gaussian mixture under the discrete VP process of diffusers'
  default linear DDPM table, float64): the exact denoiser D turned into the prediction
  a DDPM network trained on that table would give at the integer timestep it is called
  with (`OracleNetwork`, written from DDPM's x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps);
* on a tiny random `UNet2DModel` loaded through `harness.models.diffusers_model`
  (float32): the UNet itself, called as a pipeline calls it.

Both start from the same initial noise, (x_T / prior_std) init_noise_sigma, and the
stochastic schedulers get the same noise (the adapter's draws, replayed).

Tolerances (largest relative difference measured in brackets): where the scheduler
steps with alpha_bar[timestep] (DDIM, DDPM, PNDM) the network's level and the update's
are one float32 number and the runs agree to float64 rounding (`EXACT`; 2e-13). Where
it steps with its own float32 `sigmas` (DPM-Solver, UniPC, Euler, Heun; EDM: its
c_noise), a DDPM network at an integer timestep sits at sqrt((1 - abar) / abar) in
float64, 6e-8 (relative) away from the level the update assumes, at which the adapter
evaluates the model; Euler, Heun and EDMEuler also round the state to float32 in each
step (`SIGMAS`; 3e-7). On the float32 UNet the harness's model rounds u = x_t sqrt(1 +
sigma^2) back and forth, which DDIM's clipped x_0 turns into 3e-5 (`UNET`; the others
5e-7).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from harness import make_grid
from harness.core.noise import SampleNoise
from harness.core.sde import EDMSDE
from harness.models.diffusers_model import DiscreteVPSDE, load_diffusers_unet
from harness.models.oracle import mixture_64d
from harness.plugin.manager import get_plugins

diffusers = pytest.importorskip("diffusers")

#: diffusers calls NumPy on tensors inside its steps (NumPy 2 deprecations, thousands per
#: run), and torchsde notes every Brownian-tree query a float32 rounding puts outside its
#: interval: the library's own noise, filtered here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore:Should have:UserWarning")

#: The model's table: diffusers' DDPM default. Each reference scheduler is given it (their
#: own defaults differ: Heun's is Stable Diffusion's, beta from 0.00085 to 0.012).
TABLE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
         "beta_schedule": "linear"}
EXACT = 1e-12
SIGMAS = 1e-6
UNET = 1e-4
STEPS = 10  # linspace spacing of 1000 training steps: integer timesteps (0, 111, ...)


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


class Recording:
    """A harness noise source that keeps every draw, to hand the reference."""

    def __init__(self, noise: SampleNoise):
        self.noise, self.draws = noise, []

    def __call__(self, like=None):
        draw = self.noise(like)
        self.draws.append(draw.clone())
        return draw


class OracleNetwork:
    """The exact denoiser as a DDPM network trained on the scheduler's table: called with
    the (scaled) model input x_t and an integer timestep, it answers for the level
    abar = alphas_cumprod[timestep]."""

    def __init__(self, model, scheduler, prediction: str = "epsilon"):
        self.model, self.scheduler, self.prediction = model, scheduler, prediction

    def __call__(self, x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        abar = float(self.scheduler.alphas_cumprod[int(timestep)])
        sigma = math.sqrt((1 - abar) / abar)
        x_0 = self.model.denoise(x_t / math.sqrt(abar), sigma)
        eps = (x_t - math.sqrt(abar) * x_0) / math.sqrt(1 - abar)
        return {"epsilon": eps, "sample": x_0,
                "v_prediction": math.sqrt(abar) * eps - math.sqrt(1 - abar) * x_0
                }[self.prediction]


class EDMOracleNetwork:
    """The exact denoiser as an EDM-preconditioned network: input c_in u, noise
    c_noise = ln(sigma) / 4, output F with D = c_skip u + c_out F (Karras et al. 2022,
    Table 1)."""

    def __init__(self, model, sigma_data: float = 0.5):
        self.model, self.sigma_data = model, sigma_data

    def __call__(self, scaled: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma, sd = math.exp(4 * float(c_noise)), self.sigma_data
        u = scaled * math.sqrt(sigma**2 + sd**2)
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / math.sqrt(sigma**2 + sd**2)
        return (self.model.denoise(u, sigma) - c_skip * u) / c_out


def pipeline(scheduler, network: Callable, x_T: torch.Tensor, prior_std: float,
             steps: int, step_kwargs: dict | None = None,
             noise: Callable[[int], dict] | None = None) -> torch.Tensor:
    """diffusers' sampling loop as its pipelines write it (e.g. DDIMPipeline)."""
    scheduler.set_timesteps(steps)
    sample = x_T / prior_std * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(sample, t)
        output = network(model_input, t)
        sample = scheduler.step(output, t, sample, **(step_kwargs or {}),
                                **(noise(i) if noise else {})).prev_sample
    return sample


def seeds(draw: torch.Tensor) -> list[int]:
    """One generator seed per sample: the float32 bits of its draw's first two values."""
    bits = draw.flatten(1)[:, :2].float().numpy().view(np.uint32)
    return [int(lo) | int(hi) << 32 for lo, hi in bits]


def generators(draw: torch.Tensor) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds(draw)]


def run_adapter(name: str, model, steps: int, params: dict | None = None,
                samples: int = 8) -> tuple[torch.Tensor, torch.Tensor, Recording]:
    """The registered sampler's output, its initial state and its recorded draws."""
    sampler = get_plugins().samplers.get(name)
    noise = SampleNoise(7, range(samples), model.data.shape, dtype=model.dtype)
    x_T = model.sde.prior_std * noise()
    recording = Recording(noise)
    grid = make_grid(model.sde, "karras", steps)
    with torch.no_grad():
        out = sampler(model, x_T.clone(), grid, recording, None,
                      sampler.make_params(params or {}))
    return out, x_T, recording


@pytest.fixture(scope="module")
def ddpm_oracle():
    """The 64-D mixture under the discrete VP process of diffusers' default table."""
    return mixture_64d(DiscreteVPSDE(diffusers.DDPMScheduler(**TABLE).alphas_cumprod))


CASES = [  # (scheduler, settings, tolerance)
    ("DDIMScheduler", {}, EXACT),
    ("DDIMScheduler", {"prediction_type": "v_prediction", "clip_sample": False}, EXACT),
    ("DDIMScheduler", {"prediction_type": "sample", "timestep_spacing": "trailing"},
     EXACT),
    ("PNDMScheduler", {}, EXACT),
    ("PNDMScheduler", {"skip_prk_steps": True}, EXACT),
    ("DPMSolverMultistepScheduler", {}, SIGMAS),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, SIGMAS),
    ("UniPCMultistepScheduler", {}, SIGMAS),
    ("EulerDiscreteScheduler", {}, SIGMAS),
    ("HeunDiscreteScheduler", {}, SIGMAS),
]


@pytest.mark.parametrize("name, settings, tolerance", CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'defaults'}" for c in CASES])
def test_deterministic_schedulers_equal_their_own_loop_on_the_oracle(
        ddpm_oracle, name, settings, tolerance):
    model = ddpm_oracle
    ours, x_T, _ = run_adapter(f"diffusers:{name}", model, STEPS, settings)
    scheduler = getattr(diffusers, name)(**TABLE, **settings)
    network = OracleNetwork(model, scheduler, settings.get("prediction_type", "epsilon"))
    reference = pipeline(scheduler, network, x_T, model.sde.prior_std, STEPS)
    assert relative(ours, reference) <= tolerance


def test_ddim_with_eta_gets_the_harness_draws_as_its_variance_noise(ddpm_oracle):
    model = ddpm_oracle
    ours, x_T, recording = run_adapter("diffusers:DDIMScheduler_eta", model, STEPS)
    assert len(recording.draws) == STEPS
    scheduler = diffusers.DDIMScheduler(**TABLE)
    reference = pipeline(scheduler, OracleNetwork(model, scheduler), x_T,
                         model.sde.prior_std, STEPS, {"eta": 1.0},
                         lambda i: {"variance_noise": recording.draws[i]})
    assert relative(ours, reference) <= EXACT
    deterministic, _, _ = run_adapter("diffusers:DDIMScheduler", model, STEPS)
    assert relative(ours, deterministic) > 1e-2  # the noise reached the output


def test_euler_ancestral_draws_from_per_sample_generators_seeded_by_the_harness(
        ddpm_oracle):
    model = ddpm_oracle
    ours, x_T, recording = run_adapter("diffusers:EulerAncestralDiscreteScheduler", model,
                                       STEPS)
    assert len(recording.draws) == STEPS
    scheduler = diffusers.EulerAncestralDiscreteScheduler(**TABLE)
    reference = pipeline(scheduler, OracleNetwork(model, scheduler), x_T,
                         model.sde.prior_std, STEPS,
                         noise=lambda i: {"generator": generators(recording.draws[i])})
    assert relative(ours, reference) <= SIGMAS


def test_edm_euler_undoes_its_preconditioning_exactly():
    model = mixture_64d(EDMSDE(sigma_min=0.01, sigma_max=50.0))  # not the defaults
    ours, x_T, _ = run_adapter("diffusers:EDMEulerScheduler", model, STEPS)
    low, high = (float(model.sde.sigma(t)) for t in (model.sde.t_min, model.sde.T))
    scheduler = diffusers.EDMEulerScheduler(sigma_min=low, sigma_max=high)
    reference = pipeline(scheduler, EDMOracleNetwork(model), x_T, model.sde.prior_std,
                         STEPS)
    assert relative(ours, reference) <= SIGMAS


# --- a diffusers UNet2DModel, float32 ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    """A seeded random UNet and the default DDPM schedule, saved and loaded back."""
    folder = tmp_path_factory.mktemp("parity_unet")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    unet.save_pretrained(folder)
    diffusers.DDPMScheduler(**TABLE).save_pretrained(folder)
    # "nearest": the table level the scheduler steps with maps to its integer timestep.
    model = load_diffusers_unet(folder, timestep_mode="nearest")
    return model, unet.eval()


UNET_CASES = ["DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
              "UniPCMultistepScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler"]


@pytest.mark.parametrize("name", UNET_CASES)
def test_schedulers_equal_their_pipeline_loop_on_a_diffusers_unet(tiny_unet, name):
    model, unet = tiny_unet
    ours, x_T, _ = run_adapter(f"diffusers:{name}", model, STEPS, samples=4)

    def network(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(model_input, t).sample

    scheduler = getattr(diffusers, name)(**TABLE)
    reference = pipeline(scheduler, network, x_T, model.sde.prior_std, STEPS)
    assert relative(ours, reference) <= UNET


def test_the_unet_parity_sees_the_noise(tiny_unet):
    model, unet = tiny_unet
    ours, x_T, recording = run_adapter("diffusers:DDPMScheduler", model, STEPS, samples=4)
    scheduler = diffusers.DDPMScheduler(**TABLE)

    def network(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(model_input, t).sample

    reference = pipeline(scheduler, network, x_T, model.sde.prior_std, STEPS,
                         noise=lambda i: {"generator": generators(recording.draws[i])})
    assert relative(ours, reference) <= UNET
