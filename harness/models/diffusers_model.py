"""Load a local `diffusers.UNet2DModel` (DDPM, discrete time) behind the model interface.

A DDPM network (Ho et al. 2020) is trained on N discrete timesteps n = 0..N-1 with
x_n = sqrt(alpha_bar_n) x_0 + sqrt(1 - alpha_bar_n) eps. In the form of Karras et al.
(2022, Eq. 4) used throughout the harness, x_n = s_n (x_0 + sigma_n eps) with

    s_n = sqrt(alpha_bar_n),   sigma_n = sqrt((1 - alpha_bar_n) / alpha_bar_n),

so s_n = 1 / sqrt(1 + sigma_n^2). `DiffusersUNetModel._denoise(x, sigma)` therefore

1. maps the continuous sigma to a timestep by interpolating ln(sigma) linearly over the
   table ln(sigma_n) (fractional by default, as k-diffusion's DiscreteSchedule does;
   `timestep_mode="nearest"` rounds to the closest trained timestep); sigma outside
   [sigma_0, sigma_{N-1}] is clamped to the end timesteps;
2. feeds the network x_t = s x with s = 1 / sqrt(1 + sigma^2), exact for every sigma;
3. reads the output as eps (or v, or x_0, per the scheduler's `prediction_type`) and
   returns D = x - sigma eps (`harness.core.model.from_prediction`).

Its SDE is `DiscreteVPSDE`: the VP process whose ln(alpha_bar) is piecewise linear in
t between the knots t_k = k / N, k = 0..N, with alpha_bar = 1 at t = 0 and the table
value alpha_bar_n at t = (n + 1) / N (diffusers' timestep n is step n + 1 of Ho et al.).
This is the VP SDE with a piecewise constant beta(t) = -N ln(1 - beta_n) ~ N beta_n; for
the default linear schedule (beta from 1e-4 to 0.02, N = 1000) that is, to first order in
beta, `VPSDE(beta_min=0.1, beta_max=20)` (Song et al. 2021, App. B) sampled at the knots.
At every knot s(t)^2 equals the scheduler's alphas_cumprod exactly (in float64).

A class-conditional UNet (`num_class_embeds = K + 1`, an embedding of class indices, as
trained for classifier-free guidance) becomes a conditional model of K classes: one of
the K + 1 indices is the "null" (unconditional) class, the last by default (`null_class`
names another), the harness's `NULL_LABEL` rows are given it, and labels 0 .. K - 1 are
the remaining indices in order. The plain `denoise` is the null class's denoiser.

diffusers is an optional dependency (`pip install .[diffusers]`), imported only when a
model is loaded. Nothing is fetched from a hub: `path` must be a local directory written
by `save_pretrained` (the UNet's config.json and weights, optionally a pipeline folder
with `unet/` and `scheduler/` subfolders).
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import HarnessError, ParameterError
from ..core.model import NULL_LABEL, DataSpec, ScoreModel, check_labels, from_prediction
from ..core.sde import SDE, Time, _expand

#: The schedule of Ho et al. (2020) used when a folder has no scheduler config.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
    "beta_schedule": "linear",
}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
TimestepMode = Literal["fractional", "nearest"]


class MissingDependencyError(HarnessError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


def _import_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise MissingDependencyError(
            "loading a diffusers UNet needs the optional dependency 'diffusers'; install "
            "it with `pip install .[diffusers]` (or `pip install diffusers`)") from err
    return diffusers


class DiscreteVPSDE(SDE):
    """VP SDE through a discrete alpha_bar table, ln(alpha_bar) piecewise linear in t.

    See the module docstring. t runs over [0, 1]; `t_min` = 1/N is the first trained
    timestep. Scalars take a pure-Python path, tensors a vectorised one (float64 inside).
    """

    name = "discrete_vp"

    def __init__(self, alphas_cumprod: Union[Sequence[float], Tensor]):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise ParameterError("alphas_cumprod must hold at least 2 values in (0, 1)")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ParameterError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = abar
        self.num_timesteps = n = abar.numel()
        self.T, self.t_min = 1.0, 1.0 / n
        # Knot k sits at t = k / N; knot 0 is the clean data (alpha_bar = 1).
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), abar.log()])
        self._log_abar_list = self._log_abar.tolist()
        self._neg_log_abar_list = [-v for v in self._log_abar_list]
        self._tables: dict[torch.device, Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {**super().params(), "num_timesteps": self.num_timesteps,
                "alpha_bar_first": float(self.alphas_cumprod[0]),
                "alpha_bar_last": float(self.alphas_cumprod[-1])}

    def _table(self, device: torch.device) -> Tensor:
        if device not in self._tables:
            self._tables[device] = self._log_abar.to(device)
        return self._tables[device]

    # ln(alpha_bar)(t) and its slope; linear extrapolation past t = 1.
    def _segment(self, t: Time) -> tuple[Time, Time]:
        n = self.num_timesteps
        if not isinstance(t, Tensor):
            k = min(max(int(math.floor(t * n)), 0), n - 1)
            lo, hi = self._log_abar_list[k], self._log_abar_list[k + 1]
            return lo + (t * n - k) * (hi - lo), n * (hi - lo)
        table = self._table(t.device)
        u = t.to(torch.float64) * n
        k = u.floor().clamp(0, n - 1).long()
        lo, hi = table[k], table[k + 1]
        return (lo + (u - k) * (hi - lo)).to(t.dtype), (n * (hi - lo)).to(t.dtype)

    def log_alpha_bar(self, t: Time) -> Time:
        """ln(alpha_bar(t)) = 2 ln s(t)."""
        return self._segment(t)[0]

    def scale(self, t: Time) -> Time:
        log_abar = self.log_alpha_bar(t)
        return torch.exp(0.5 * log_abar) if isinstance(t, Tensor) else math.exp(0.5 * log_abar)

    def sigma(self, t: Time) -> Time:
        log_abar = self.log_alpha_bar(t)
        if isinstance(t, Tensor):
            return torch.expm1(-log_abar).clamp_min(0).sqrt()
        return math.sqrt(max(0.0, math.expm1(-log_abar)))

    def t_of_sigma(self, sigma: Time) -> Time:
        n = self.num_timesteps
        if not isinstance(sigma, Tensor):
            target = -math.log1p(sigma**2)
            table = self._log_abar_list
            # The segment [k, k+1] whose -ln(alpha_bar) range holds -target, as below.
            k = min(max(bisect.bisect_left(self._neg_log_abar_list, -target) - 1, 0), n - 1)
            lo, hi = table[k], table[k + 1]
            return (k + (target - lo) / (hi - lo)) / n
        table = self._table(sigma.device)
        target = -torch.log1p(sigma.to(torch.float64) ** 2)
        k = (torch.searchsorted(-table, -target.contiguous(), right=False) - 1).clamp(0, n - 1)
        lo, hi = table[k], table[k + 1]
        return ((k + (target - lo) / (hi - lo)) / n).to(sigma.dtype)

    def scale_rate(self, t: Time) -> Time:
        return 0.5 * self._segment(t)[1]

    def sigma_derivative(self, t: Time) -> Time:
        # sigma^2 = e^{-L} - 1  =>  2 sigma sigma' = -L' e^{-L}
        log_abar, slope = self._segment(t)
        ops = torch if isinstance(t, Tensor) else math
        return -0.5 * slope * ops.exp(-log_abar) / self.sigma(t)

    def diffusion_squared(self, t: Time) -> Time:
        return -self._segment(t)[1]  # = beta(t); closed form avoids 0 * inf at t = 0


def sigmas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """sigma_n = sqrt((1 - alpha_bar_n) / alpha_bar_n), in float64."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return ((1 - abar) / abar).sqrt()


def _class_embeddings(unet: nn.Module) -> int:
    """K + 1 for a UNet with an embedding of K + 1 class indices; 0 for an unconditional
    one. Other class conditioning (`class_embed_type`) is refused."""
    config = getattr(unet, "config", None)
    kind = getattr(config, "class_embed_type", None)
    if kind is not None:
        raise ParameterError(f"class_embed_type {kind!r} is not supported: only an "
                             f"embedding of class indices (num_class_embeds) is")
    return int(getattr(config, "num_class_embeds", None) or 0)


class DiffusersUNetModel(ScoreModel):
    """A diffusers `UNet2DModel` trained with a discrete DDPM schedule, as a ScoreModel;
    class-conditional when the UNet has class embeddings (see the module docstring).

    Any diffusers network called as `net(x_t, timestep, class_labels=...)` serves (a
    `DiTTransformer2DModel` too, `harness.models.latent_model`); `num_class_embeds`
    (K + 1) then says how many class indices it embeds, else the UNet's config does."""

    def __init__(self, unet: nn.Module, alphas_cumprod: Union[Sequence[float], Tensor],
                 prediction_type: str = "epsilon", data: Optional[DataSpec] = None,
                 timestep_mode: TimestepMode = "fractional",
                 null_class: Optional[int] = None,
                 num_class_embeds: Optional[int] = None):
        if prediction_type not in PREDICTIONS:
            raise ParameterError(f"prediction_type must be one of {', '.join(PREDICTIONS)}, "
                                 f"got {prediction_type!r}")
        if timestep_mode not in ("fractional", "nearest"):
            raise ParameterError(f"timestep_mode must be 'fractional' or 'nearest', "
                                 f"got {timestep_mode!r}")
        embeddings = _class_embeddings(unet) if num_class_embeds is None else num_class_embeds
        if embeddings:
            null = embeddings - 1 if null_class is None else null_class
            if isinstance(null, bool) or not isinstance(null, int) \
                    or not 0 <= null < embeddings or embeddings < 2:
                raise ParameterError(
                    f"null_class must be a class index in 0..{embeddings - 1} of a UNet "
                    f"with num_class_embeds = {embeddings} >= 2, got {null_class!r}")
        elif null_class is not None:
            raise ParameterError("null_class given, but the UNet has no class embeddings")
        config = getattr(unet, "config", None)
        if data is None:
            size = getattr(config, "sample_size", None)
            size = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
            data = DataSpec(shape=(int(getattr(config, "in_channels", 3)), *size),
                            value_range=(-1.0, 1.0), levels=256)
        super().__init__(DiscreteVPSDE(alphas_cumprod), data)
        self.unet = unet
        self.prediction_type = prediction_type
        self.timestep_mode = timestep_mode
        # float64 and outside the module's buffers: `.to(dtype)` must not round the table.
        self.sigmas = sigmas_from_alphas_cumprod(self.sde.alphas_cumprod)
        self._log_sigmas: dict[torch.device, Tensor] = {}
        #: The UNet's class index of the unconditional class; None: not conditional.
        self.null_class: Optional[int] = null if embeddings else None
        self.num_classes = embeddings - 1 if embeddings else 0

    def _log_sigma_table(self, device: torch.device) -> Tensor:
        if device not in self._log_sigmas:
            self._log_sigmas[device] = self.sigmas.log().to(device)
        return self._log_sigmas[device]

    def timestep_of_sigma(self, sigma: Tensor) -> Tensor:
        """Timestep n (float64, in [0, N-1]) whose table ln(sigma_n) interpolates ln(sigma)."""
        table = self._log_sigma_table(sigma.device)
        last = table.numel() - 1
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64, device=table.device).log()
        log_sigma = log_sigma.clamp(float(table[0]), float(table[-1])).contiguous()
        hi = torch.searchsorted(table, log_sigma).clamp(1, last)
        lo = hi - 1
        frac = (log_sigma - table[lo]) / (table[hi] - table[lo])
        n = lo + frac
        return n.round() if self.timestep_mode == "nearest" else n

    def class_index(self, labels: Tensor) -> Tensor:
        """The UNet's class indices for harness labels: `NULL_LABEL` -> `null_class`,
        labels 0 .. K - 1 -> the other indices in order (label c -> c, or c + 1 from the
        null index on). An invalid label lands outside the table, where the embedding
        refuses it."""
        index = labels + (labels >= self.null_class).long()
        return torch.where(labels == NULL_LABEL, self.null_class, index)

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self.null_class is None:
            return self._evaluate(x, sigma, None)
        null = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
        return self._evaluate(x, sigma, null)

    def _denoise_labelled(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, self.num_classes)
        return self._evaluate(x, sigma, self.class_index(labels))

    def _evaluate(self, x: Tensor, sigma: Tensor, class_labels: Optional[Tensor]) -> Tensor:
        timestep = self.timestep_of_sigma(sigma).to(torch.float32)
        s = _expand(1 / (1 + sigma**2).sqrt(), x)
        unet_dtype = next(self.unet.parameters()).dtype
        out = self.unet((s * x).to(unet_dtype), timestep,
                        class_labels=class_labels).sample.to(x.dtype)
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: the mean part comes first
            out = out[:, : x.shape[1]]
        return from_prediction(PREDICTIONS[self.prediction_type], out, x, s, _expand(sigma, x))


def _find_unet_dir(root: Path) -> Path:
    if (root / "config.json").is_file():
        return root
    if (root / "unet" / "config.json").is_file():
        return root / "unet"
    raise ParameterError(f"{root} holds no diffusers UNet (no config.json in it or in "
                         f"{root / 'unet'})")


def _find_scheduler_dir(root: Path, unet_dir: Path) -> Optional[Path]:
    for folder in (root / "scheduler", root, unet_dir):
        if (folder / "scheduler_config.json").is_file():
            return folder
    return None


def load_diffusers_unet(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                        data: Optional[DataSpec] = None,
                        timestep_mode: TimestepMode = "fractional",
                        dtype: torch.dtype = torch.float32,
                        null_class: Optional[int] = None) -> DiffusersUNetModel:
    """A `DiffusersUNetModel` from a local `save_pretrained` folder (never the hub).

    The schedule comes from `scheduler_config.json` (in `path/scheduler`, `path` or the
    UNet's folder) via `DDPMScheduler.from_pretrained`, else `DEFAULT_SCHEDULE`. `data`
    defaults to the UNet's channels and sample size with 256 levels in [-1, 1]. A UNet
    with class embeddings is conditional; `null_class` is its unconditional class index
    (default: the last).
    """
    diffusers = _import_diffusers()
    root = Path(path)
    if not root.is_dir():
        raise ParameterError(f"diffusers model folder not found: {root}")
    unet_dir = _find_unet_dir(root)
    unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
    config = unet.config
    if getattr(config, "time_embedding_type", "positional") != "positional":
        raise ParameterError(
            f"{unet_dir}: time_embedding_type {config.time_embedding_type!r} is conditioned "
            "on a continuous noise level, not on DDPM timesteps; only 'positional' UNets "
            "are supported")
    try:
        _class_embeddings(unet)
    except ParameterError as err:
        raise ParameterError(f"{unet_dir}: {err}") from None
    scheduler_dir = _find_scheduler_dir(root, unet_dir)
    if scheduler_dir is None:
        scheduler = diffusers.DDPMScheduler(**DEFAULT_SCHEDULE)
    else:
        scheduler = diffusers.DDPMScheduler.from_pretrained(str(scheduler_dir),
                                                            local_files_only=True)
    unet = unet.to(device=device, dtype=dtype).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    model = DiffusersUNetModel(unet, scheduler.alphas_cumprod,
                               prediction_type=scheduler.config.prediction_type,
                               data=data, timestep_mode=timestep_mode,
                               null_class=null_class)
    return model.eval()
