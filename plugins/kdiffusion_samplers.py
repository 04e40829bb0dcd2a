"""k-diffusion's samplers, each registered as `kdiffusion:<name>` and run as it is.

When k-diffusion is installed, every `sample_<name>` function of `k_diffusion.sampling`
(Crowson 2022) that the harness can budget becomes the sampler `kdiffusion:<name>`,
called on the trial's grid with the harness's denoiser and noise (`kdiffusion_call`
says how). When it is not installed this plugin registers nothing, silently. The
functions' signatures are read from k-diffusion's source; the module itself loads when
one of them first runs (`kdiffusion_loading`).

Parameters: a sampler's params are its function's keyword arguments (through
`harness.core.foreign_params`), typed from their defaults, with the library's defaults.
The arguments the harness fills in (`TAKEN`) are refused with the reason. Two markers
are added, each allowed one value, so that every trial's logged params say what the
library does differently: `noise`, where the noise comes from (`NOISE`), and for
dpm_fast `grid = "end-points"`: it takes only the grid's end points.

Stochastic or not: a sampler's capabilities describe its function at the library's
defaults, as the conformance kit checks them, and they must stay true for every value a
suite may set, because the ODE-error and exact-KL metrics trust `stochastic = False`.
So a function that draws no noise at its defaults but has an argument that turns noise
on (`SWITCHES`: euler, heun, dpm_2 with s_churn > 0; dpm_fast with eta > 0) is
registered twice, as the harness's own ddim and ddim_eta are: `kdiffusion:euler`,
deterministic, with that argument (and those acting only with it) left at the
library's value, and `kdiffusion:euler_churn`, stochastic, the argument on by default.
Functions whose defaults draw noise (the ancestral and SDE solvers, eta = 1) are
stochastic, also when a suite sets eta = 0 (the kit allows that direction).

Capabilities (`DECLARED`) are written here, not derived: the NFE of each function read
from its source (two evaluations per step for the two-stage solvers, one on a step to
sigma = 0, where they take an Euler step), and the order the conformance kit measures
at the defaults (tests/test_kdiffusion_kit.py pins its verdicts). A function new to
this table is not registered, and is listed in `NOT_ADAPTED` with the others that are
not: name -> why.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any, Literal

from harness import Capabilities, ParameterError, Params, Sampler, hookimpl
from harness.core.foreign_params import foreign_params

from . import kdiffusion_loading
from .kdiffusion_call import KDiffusionSampler

harness_api_version = 1

#: The distribution whose code these samplers run (its version is in their citations).
DISTRIBUTION = "k-diffusion"

#: The arguments the harness fills in, and why a suite cannot set them.
TAKEN = {
    "model": "the harness's denoiser D(u; sigma); each call is one counted evaluation",
    "x": "the initial state divided by s(t_0): k-diffusion's unscaled variable",
    "sigmas": "the trial's grid: its noise levels, the final 0 included",
    "sigma_min": "the grid's smallest positive noise level",
    "sigma_max": "the grid's first noise level",
    "n": "the trial's steps: n evaluations",
    "extra_args": "the model takes none: labels and guidance are the harness's",
    "callback": "the harness's callback, passed on step by step",
    "disable": "no progress bar",
    "noise_sampler": "each sample's own noise stream of the harness",
}

#: What each settable argument means (k-diffusion documents none).
DOCS = {
    "eta": "share of each step's noise drawn afresh (ancestral); 0 draws none",
    "s_noise": "scale of the fresh noise; 1 keeps the marginals",
    "s_churn": "total churn of Karras et al. Alg. 2: gamma_i = min(s_churn / N, "
               "sqrt(2) - 1)",
    "s_tmin": "churn only where sigma_i >= s_tmin",
    "s_tmax": "churn only where sigma_i <= s_tmax",
    "order": "the linear multistep order, in sigma",
    "r": "where the second evaluation sits, as a share of the step in log sigma",
    "solver_type": "the weight of the multistep difference: its Taylor form ('heun') or "
                   "the paper's ('midpoint')",
    "grid": "dpm_fast takes the grid's first and smallest positive noise levels and "
            "steps floor(n / 3) + 1 times uniformly in log sigma between them",
}

#: Arguments whose values the library checks only when it runs: their choices.
CHOICES = {"solver_type": ("heun", "midpoint")}

#: Arguments that turn noise on where the library leaves it off: argument -> (its
#: default in the stochastic registration, that registration's suffix, the arguments
#: that act only with it). s_churn = 10 is the harness's `langevin` default.
SWITCHES = {
    "s_churn": (10.0, "churn", ("s_tmin", "s_tmax", "s_noise")),
    "eta": (1.0, "eta", ("s_noise",)),
}

#: The values of the `noise` parameter: where a sampler's noise comes from.
NOISE = {
    "none": "draws no noise",
    "per-sample": "each sample's own harness stream: independent of its batch",
    "per-sample-untied": "each sample's own harness stream, one independent draw per "
                         "call, where k-diffusion's Brownian tree ties the draws over a "
                         "step's first part and over the whole step together",
    "global-rng": "torch's global generator (no way in), seeded from the samples' "
                  "streams: reproducible, but a sample's noise depends on its batch",
}

#: Functions that draw twice per step, over nested intervals ("per-sample-untied").
NESTED_DRAWS = ("dpmpp_sde",)

#: Why the two-stage ancestral solvers take eta <= 1 (k-diffusion checks nothing).
EARLY_EULER = ("above 1 a step can end at sigma_down = 0 before the grid does, and take "
               "one evaluation instead of two")
#: Bounds the library does not check, beyond which a function would break its declared
#: capabilities: function -> {argument: (lowest, highest, why)}.
LIMITS = {
    "dpm_2_ancestral": {"eta": (None, 1.0, EARLY_EULER)},
    "dpmpp_2s_ancestral": {"eta": (None, 1.0, EARLY_EULER)},
    "lms": {"order": (1, None, "order 0 leaves the state as it is")},
}

#: The capabilities of each registered name at its defaults. The kit's measured orders
#: (tests/test_kdiffusion_kit.py): PF-ODE error on 32-256 uniform steps; weak error on a
#: Gaussian, whose linear denoiser lets some schemes converge faster than their order
#: (dpm_2_ancestral 1.97, dpmpp_3m_sde 2.55, dpmpp_2m_sde 1.47): only the general weak
#: order of an ancestral or SDE step, 1, is declared.
DECLARED = {
    "euler": Capabilities(stochastic=False, order=1),                        # 1.00
    "euler_churn": Capabilities(stochastic=True, order=1),                   # 0.84
    "heun": Capabilities(stochastic=False, order=2, nfe_per_step=2,
                         final_step_nfe=1),                                  # 1.98
    "heun_churn": Capabilities(stochastic=True, order=1, nfe_per_step=2,
                               final_step_nfe=1),                            # 1.61
    "dpm_2": Capabilities(stochastic=False, order=2, nfe_per_step=2,
                          final_step_nfe=1),                                 # 1.91
    "dpm_2_churn": Capabilities(stochastic=True, order=1, nfe_per_step=2,
                                final_step_nfe=1),                           # 1.52
    # Linear multistep of order 4 in sigma; the kit's window sees 3.53 (it fails there).
    "lms": Capabilities(stochastic=False, order=4),
    "euler_ancestral": Capabilities(stochastic=True, order=1),               # 0.84
    "dpm_2_ancestral": Capabilities(stochastic=True, order=1, nfe_per_step=2,
                                    final_step_nfe=1),
    # Third-order steps, but k-diffusion spends the remainder of n / 3 on a last step of
    # order 1 (n mod 3 = 0 or 1) or 2: one step of local error O(h^2) makes it order 2.
    "dpm_fast": Capabilities(stochastic=False, order=2),                     # 1.97
    "dpm_fast_eta": Capabilities(stochastic=True, order=1),
    "dpmpp_2s_ancestral": Capabilities(stochastic=True, order=1, nfe_per_step=2,
                                       final_step_nfe=1),                    # 1.78
    "dpmpp_sde": Capabilities(stochastic=True, order=1, nfe_per_step=2,
                              final_step_nfe=1),                             # 0.76
    "dpmpp_2m": Capabilities(stochastic=False, order=2),                     # 1.80
    "dpmpp_2m_sde": Capabilities(stochastic=True, order=1),
    "dpmpp_3m_sde": Capabilities(stochastic=True, order=1),
}

#: k-diffusion's functions that are not registered: name -> why. Registration adds those
#: of a newer k-diffusion that this adapter does not know.
NOT_ADAPTED = {
    "dpm_adaptive": "adaptive step size: its NFE is whatever its error control spends, "
                    "not a function of the steps, so no budget can be declared or met",
}


@hookimpl
def harness_register_samplers(register):
    path = kdiffusion_loading.source()
    if path is None:
        return
    version = importlib.metadata.version(DISTRIBUTION)
    for function, (signature, doc) in kdiffusion_loading.signatures(path).items():
        for sampler in adapted(function, signature, doc, version):
            register(sampler)


def adapted(function: str, signature: inspect.Signature, doc: str,
            version: str) -> list[Sampler]:
    """The samplers of one `sample_<function>`: none (then it is in `NOT_ADAPTED`), one,
    or, for a function with a noise switch that is off by default, two."""
    arguments = signature.parameters
    if function in NOT_ADAPTED:
        return []
    if "sigmas" not in arguments and not {"sigma_min", "sigma_max", "n"} <= set(arguments):
        NOT_ADAPTED[function] = "takes neither a sigma grid nor dpm_fast's end points"
        return []
    if function not in DECLARED:
        NOT_ADAPTED[function] = (f"new in k-diffusion {version}: its NFE per step and "
                                 f"order are not declared in this adapter yet")
        return []
    switch = next((a for a in SWITCHES if a in arguments and not arguments[a].default),
                  None)
    if switch is None:
        return [_sampler(function, function, signature, doc, version, fixed={}, on="",
                         defaults={})]
    value, suffix, companions = SWITCHES[switch]
    variant = f"{function}_{suffix}"
    fixed = {name: (f"k-diffusion's default {arguments[name].default!r}, so that no noise "
                    f"is drawn; kdiffusion:{variant} sets it")
             for name in (switch, *companions) if name in arguments}
    on = f" with {switch} = {value:g}"
    return [_sampler(function, function, signature, doc, version, fixed=fixed, on="",
                     defaults={}),
            _sampler(variant, function, signature, doc, version, fixed={}, on=on,
                     defaults={switch: value})]


def _sampler(name: str, function: str, signature: inspect.Signature, doc: str,
             version: str, *, fixed: dict[str, str], on: str,
             defaults: dict[str, Any]) -> Sampler:
    """`kdiffusion:<name>`, running `sample_<function>`: `fixed` are the arguments left
    at the library's value (why), `defaults` those given another default, said by
    `on` in the summary."""
    capabilities = DECLARED[name]
    arguments = signature.parameters
    on_grid = "sigmas" in arguments
    global_rng = "s_churn" in arguments  # the churn functions draw with torch.randn_like
    noise = ("none" if not capabilities.stochastic else "global-rng" if global_rng
             else "per-sample-untied" if function in NESTED_DRAWS else "per-sample")
    markers = {"noise": noise, **({} if on_grid else {"grid": "end-points"})}
    params = _params(name, signature, markers, defaults,
                     {**{a: why for a, why in TAKEN.items() if a in arguments}, **fixed},
                     LIMITS.get(function, {}))
    headline = doc.splitlines()[0] if doc else ""
    summary = f"k-diffusion's sample_{function}{on}" + (f": {headline}" if headline
                                                       else ", run as it is")

    def passed(values: Params) -> dict[str, Any]:
        return {k: v for k, v in values.to_dict().items() if k not in markers}

    fn = KDiffusionSampler(function, summary, stochastic=capabilities.stochastic,
                           on_grid=on_grid, noise_sampler="noise_sampler" in arguments,
                           global_rng=global_rng, passed=passed)
    citation = f"Crowson 2022, k-diffusion {version}, `sample_{function}`" + (
        f" ({headline})" if headline else "")
    return Sampler(name=f"kdiffusion:{name}", fn=fn, params=params,
                   capabilities=capabilities, citation=citation)


def _params(name: str, signature: inspect.Signature, markers: dict[str, str],
            defaults: dict[str, Any], taken: dict[str, str],
            limits: dict[str, tuple[float | None, float | None, str]]
            ) -> type[Params]:
    """The function's keyword arguments as a `Params` class, with the markers (one
    allowed value each), the choices of `CHOICES` and the bounds of `limits`."""
    arguments = [a.replace(annotation=Literal[CHOICES[a.name]])
                 if a.name in CHOICES else a for a in signature.parameters.values()]
    arguments += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value,
                                    annotation=Literal[value])
                  for key, value in markers.items()]
    docs = {**DOCS, "noise": NOISE[markers["noise"]]}
    cls = foreign_params(f"sample_{name}", signature.replace(parameters=arguments),
                         taken=taken, docs=docs, defaults=defaults)
    if not limits:
        return cls

    def check(self: Params) -> None:
        for argument, (lowest, highest, why) in limits.items():
            value = getattr(self, argument)
            if lowest is not None and value < lowest:
                bound = f">= {lowest}"
            elif highest is not None and value > highest:
                bound = f"<= {highest}"
            else:
                continue
            raise ParameterError(f"parameter {argument!r} must be {bound} ({why}), got "
                                 f"{value!r}")

    return type(cls.__name__, (cls,), {"check": check, "__doc__": cls.__doc__,
                                       "__module__": __name__})
