"""Time schedules: each grid's noise levels against its formula, written here from its
source independently of the code (numpy where the source used it), under every process;
the three schedules of the committed results bit for bit as they were; and the grid
contract every schedule keeps (N points within [t_min, T], descending, then t = 0)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from harness import SCHEDULES, ParameterError, make_grid
from harness.core.sde import make_sde

STEPS = (1, 2, 3, 7, 10, 35)

#: sha256 (first 16 hex digits) of repr((t, sigma, scale)) of make_grid(sde, name, N) for
#: N in STEPS, computed before schedules became plugins: committed results and their
#: configuration hashes rest on these grids being unchanged to the last bit.
GRIDS_BEFORE_PLUGINS = {
    ("vp", "uniform_t"): ("e969cce9781a7a16", "eb7eaf1f08a7b86d", "50925bdbf568e6df",
                          "0205da10ca82d720", "38e040994baf56ab", "581d5529c2f1f396"),
    ("vp", "karras"): ("e969cce9781a7a16", "bc275eac154cb31e", "1f5a800c675e9995",
                       "c6c0489ff5588dbe", "78ab788808f21cf0", "c26a696fd75a9407"),
    ("vp", "log_snr"): ("e969cce9781a7a16", "bc275eac154cb31e", "c3795b790f912822",
                        "2886cce00b0b4b8d", "a5984d7273876703", "794020891ee54777"),
    ("subvp", "uniform_t"): ("e24f4dcb699bee9d", "ca8db9c66fc79038", "ba027859e5540e0b",
                             "eb49d69a42342001", "b32dada2664419a9", "68d38ae4170dbf53"),
    ("subvp", "karras"): ("e24f4dcb699bee9d", "57338a2fbd8787b0", "026b62791aff4a57",
                          "4be27f7af74b0bc8", "68bfb9040db38f67", "eea84d1c7230d6ce"),
    ("subvp", "log_snr"): ("e24f4dcb699bee9d", "57338a2fbd8787b0", "3dda48d7ffcfafd8",
                           "e9f24c511d833ada", "0f850b488f07d2d8", "47fbda02999c7b82"),
    ("ve", "uniform_t"): ("5182f9d6c3cf6164", "1bc55728219aca1c", "068856341d19ecef",
                          "80ebe40cf223e96c", "72cf57d6e16fcd68", "49d89bbf8e0a665a"),
    ("ve", "karras"): ("5182f9d6c3cf6164", "00f3ea465ad744c2", "7ddf451539cc2892",
                       "ac1004519b8fa757", "6ae04f3d809a78dd", "acd11daad44c7ad4"),
    ("ve", "log_snr"): ("5182f9d6c3cf6164", "00f3ea465ad744c2", "ba51ec9811d73354",
                        "dc0c3c90d7d14e0b", "e44b9196e4bac1d3", "b77d9c3f851271c6"),
    ("edm", "uniform_t"): ("045b71401e5cb665", "8fa5d777c23c3b98", "cdbf07c797d4c25f",
                           "c5140f6dd1e52ffa", "641efb5d3cacd6fe", "411a867a025c3e18"),
    ("edm", "karras"): ("045b71401e5cb665", "c8363a977e206224", "b7bd5e4b912c27b8",
                        "8bef70ddff6a390d", "cb50a5c60d218fb4", "7b4d8b85423d91eb"),
    ("edm", "log_snr"): ("045b71401e5cb665", "c8363a977e206224", "53a1d6a7f57a4adb",
                         "8badef1c12dcf28d", "f26796e5feaa692f", "7cf965bd61f48df8"),
}

#: Align Your Steps' published 10-step levels for Stable Diffusion 1.5 (11 values, the last
#: replaced by 0 when sampling), as a given list.
AYS_SD15 = [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177,
            1.3943805092, 0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662,
            0.0291671582]


def _digest(grid) -> str:
    return hashlib.sha256(repr((grid.t, grid.sigma, grid.scale)).encode()).hexdigest()[:16]


@pytest.mark.parametrize("process, name", sorted(GRIDS_BEFORE_PLUGINS))
def test_the_committed_results_grids_are_unchanged_to_the_bit(process, name):
    sde = make_sde(process)
    assert tuple(_digest(make_grid(sde, name, n)) for n in STEPS) == \
        GRIDS_BEFORE_PLUGINS[(process, name)]


def test_pinned_values_of_two_grids():
    """Two of the pinned grids in full, to read: VP karras and VE uniform_t."""
    karras = make_grid(make_sde("vp"), "karras", 5)
    assert karras.sigma == (152.16697028394637, 35.90633942439506, 5.808924061321296,
                            0.4918904651652733, 0.010485992786702987, 0.0)
    uniform = make_grid(make_sde("ve"), "uniform_t", 3)
    assert uniform.t == (1.0, 0.500005, 9.99999999995449e-06, 0.0)


# --- each schedule against its formula ---------------------------------------------------

def _ends(sde):
    return float(sde.sigma(sde.t_min)), float(sde.sigma(sde.T))


def _ramp(n):
    return [i / (n - 1) for i in range(n)] if n > 1 else [0.0]


def expected_sigmas(sde, name, n, **params):
    """The N noise levels before the final step, from each source's formula."""
    lo, hi = _ends(sde)
    if name == "uniform_t":  # Song et al. 2021: t uniform from T to t_min
        return [float(sde.sigma(sde.T + u * (sde.t_min - sde.T))) for u in _ramp(n)]
    if name == "karras":  # Karras et al. 2022, Eq. 5
        rho = params.get("rho", 7.0)
        return [(hi ** (1 / rho) + u * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
                for u in _ramp(n)]
    if name == "log_snr":  # geometric in sigma
        return [hi * (lo / hi) ** u for u in _ramp(n)]
    if name == "polyexponential":  # k-diffusion: exp(ramp^rho (log max - log min) + log min)
        rho = params.get("rho", 1.0)
        return [lo * (hi / lo) ** ((1 - u) ** rho) for u in _ramp(n)]
    if name == "edm_vp":  # EDM: VP sigma(t) through (1, sigma_max) and (eps_s, sigma_min)
        eps = params.get("eps_s", 1e-3)
        beta_d, beta_min = np.linalg.solve([[0.5, 1.0], [eps**2 / 2, eps]],
                                           [math.log1p(hi**2), math.log1p(lo**2)])
        times = [1 + u * (eps - 1) for u in _ramp(n)]
        return [math.sqrt(math.exp(beta_d * t**2 / 2 + beta_min * t) - 1) for t in times]
    if name in ("ddim_uniform", "ddim_quadratic"):  # DDIM's code, index i at its t
        if name == "ddim_uniform":
            indices = list(range(0, 1000, 1000 // n))[:n]
        else:
            indices = [int(s) for s in np.linspace(0, np.sqrt(1000 * 0.8), n) ** 2]
        width = (sde.T - sde.t_min) / 999
        return [float(sde.sigma(sde.t_min + i * width)) for i in reversed(indices)]
    raise AssertionError(name)


FORMULAS = [("uniform_t", {}), ("karras", {}), ("karras", {"rho": 3.0}), ("log_snr", {}),
            ("polyexponential", {}), ("polyexponential", {"rho": 2.0}), ("edm_vp", {}),
            ("edm_vp", {"eps_s": 0.01}), ("ddim_uniform", {}), ("ddim_quadratic", {})]


@pytest.mark.parametrize("name, params", FORMULAS, ids=lambda v: str(v))
@pytest.mark.parametrize("n", [1, 2, 5, 10, 25])
def test_every_schedule_follows_its_formula(sde, name, params, n):
    if n == 1 and name in ("ddim_uniform", "ddim_quadratic", "polyexponential"):
        n = 2  # their formulas divide by N - 1 or need two indices
    grid = SCHEDULES[name].choose(params).grid(sde, n)
    assert list(grid.sigma[:-1]) == pytest.approx(expected_sigmas(sde, name, n, **params),
                                                 rel=1e-9)
    assert grid.t[-1] == 0.0 and grid.sigma[-1] == float(sde.sigma(0.0))


def test_ddim_spacings_on_vp_are_ddpm_timesteps_over_1000():
    """For VP (T = 1, t_min = 1e-3) training index i is t = (i + 1) / 1000, as in DDPM;
    DDIM's 10 uniform steps visit indices 900, 800, ..., 0; its quadratic ones end at
    index 800, short of T."""
    sde = make_sde("vp")
    uniform = make_grid(sde, "ddim_uniform", 10)
    assert list(uniform.t[:-1]) == pytest.approx([(i + 1) / 1000 for i in range(900, -1, -100)],
                                                 rel=1e-12)
    quadratic = make_grid(sde, "ddim_quadratic", 10)
    assert quadratic.t[0] == pytest.approx(0.801, rel=1e-12)


def test_edm_vp_on_the_vp_process_is_uniform_t():
    """EDM fits beta_d, beta_min to the sigma range; on VP(0.1, 20) with eps_s = t_min
    the fit is the process itself, so the grid is uniform in t."""
    sde = make_sde("vp")
    fitted, uniform = make_grid(sde, "edm_vp", 12), make_grid(sde, "uniform_t", 12)
    assert list(fitted.t) == pytest.approx(list(uniform.t), rel=1e-9)


def test_polyexponential_with_rho_1_is_log_snr(sde):
    assert list(make_grid(sde, "polyexponential", 9).sigma) == pytest.approx(
        list(make_grid(sde, "log_snr", 9).sigma), rel=1e-12)


# --- given sigma lists (Align Your Steps) ----------------------------------------------

def ays_levels(levels, steps):
    """AYS's loglinear_interp as its authors publish it (numpy), then its sampling rule:
    steps + 1 levels, the last replaced by the final step."""
    if len(levels) != steps + 1:
        xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
        levels = np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1]
    return list(levels)[:steps]


@pytest.mark.parametrize("steps", [1, 4, 10, 17, 40])
def test_a_given_list_is_interpolated_as_align_your_steps_does(steps):
    sde = make_sde("edm")
    grid = SCHEDULES["sigma_list"].choose({"sigmas": AYS_SD15}).grid(sde, steps)
    assert list(grid.sigma[:-1]) == pytest.approx(ays_levels(AYS_SD15, steps), rel=1e-12)
    assert grid.sigma[-1] == 0.0
    if steps == 10:  # the published levels themselves
        assert list(grid.sigma[:-1]) == AYS_SD15[:10]


def test_a_given_list_in_range_is_checked_against_the_process():
    chosen = SCHEDULES["sigma_list"].choose({"sigmas": [100.0, 1.0, 0.02]})
    chosen.grid(make_sde("vp"), 4)                       # sigma(T) = 152.2: inside
    with pytest.raises(ParameterError, match=r"sigmas\[0\] = 100.0 is above sigma\(T\) = "
                                             r"80, the largest noise level of the edm"):
        chosen.grid(make_sde("edm"), 4)
    low = SCHEDULES["sigma_list"].choose({"sigmas": [10.0, 0.001]})
    with pytest.raises(ParameterError, match=r"sigmas\[1\] = 0.001 is below sigma\(t_min\)"):
        low.grid(make_sde("vp"), 3)


@pytest.mark.parametrize("sigmas, message", [
    ([10.0, 20.0, 1.0], r"sigmas\[1\] = 20.0 must be below sigmas\[0\] = 10.0"),
    ([10.0, 10.0], r"sigmas\[1\] = 10.0 must be below"),
    ([10.0, 0.0], r"sigmas\[1\] = 0.0 must be a finite number > 0"),
    ([10.0, float("nan")], r"sigmas\[1\] = nan must be a finite number > 0"),
    ([10.0], "sigmas must hold 2 to 200 noise levels, got 1"),
    ([10.0, "x"], r"sigmas\[1\]' must be a number, got 'x'"),
])
def test_a_given_list_that_cannot_be_a_schedule_is_refused_naming_the_value(sigmas,
                                                                          message):
    with pytest.raises(ParameterError, match=message):
        SCHEDULES["sigma_list"].choose({"sigmas": sigmas})


# --- the grid contract -----------------------------------------------------------------

CHOICES = [(name, {"sigmas": AYS_SD15}) if name == "sigma_list" else (name, {})
           for name in sorted(SCHEDULES)]


@pytest.mark.parametrize("name, params", CHOICES, ids=[c[0] for c in CHOICES])
@pytest.mark.parametrize("steps", [2, 10])
def test_every_grid_visits_n_points_in_range_then_zero(sde, name, params, steps):
    grid = SCHEDULES[name].choose(params).grid(sde, steps)
    assert grid.steps == steps and grid.t[-1] == 0.0
    assert all(a > b for a, b in zip(grid.t, grid.t[1:]))
    assert all(sde.t_min * (1 - 1e-9) <= t <= sde.T for t in grid.t[:-1])
    assert grid.sigma == tuple(float(sde.sigma(t)) for t in grid.t)


@pytest.mark.parametrize("name", ["karras", "log_snr", "uniform_t", "edm_vp",
                                  "polyexponential"])
def test_the_range_spanning_schedules_reach_sigma_max_and_sigma_min(sde, name):
    grid = make_grid(sde, name, 10)
    assert grid.t[0] == sde.T and grid.t[-2] == pytest.approx(sde.t_min, rel=1e-9)


def test_one_step_grid(sde):
    grid = make_grid(sde, "uniform_t", 1)
    assert grid.t == (sde.T, 0.0)


def test_quantised_ddim_quadratic_refuses_steps_that_repeat_an_index():
    sde = make_sde("vp")
    make_grid(sde, "ddim_quadratic", 29)                 # (sqrt(800) / 28)^2 > 1
    with pytest.raises(ParameterError, match="30 steps repeat training index 0 of 1000"):
        make_grid(sde, "ddim_quadratic", 30)
    free = SCHEDULES["ddim_quadratic"].choose({"quantize": False})
    assert free.grid(sde, 100).steps == 100


def test_labels_name_changed_parameters_exactly_and_defaults_not_at_all():
    karras = SCHEDULES["karras"]
    assert karras.choose().label == karras.choose({"rho": 7.0}).label == "karras"
    assert karras.choose({"rho": 5}).label == "karras(rho=5.0)"
    given = SCHEDULES["sigma_list"].choose({"sigmas": AYS_SD15})
    assert given.label.startswith("sigma_list(sigmas=[14.6146412293, 6.4745760956, ")
    assert given.short_label == "sigma_list(#" + hashlib.sha256(
        given.label.encode()).hexdigest()[:6] + ")"
