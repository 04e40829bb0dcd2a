"""Shared fixtures: the installed plugins, the exact oracles, float64 by default."""

from __future__ import annotations

import pytest
import torch

from harness.metrics.fid import CACHE_ENV
from harness.models.oracle import mixture_64d, ring_2d
from harness.plugin.manager import get_plugins
from harness.core.sde import make_sde

# Small tensors dominate the tests; one thread avoids spin-wait contention on 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test its own disk cache (FID statistics, ODE references): what one test
    computed never makes another pass, and the user's ~/.cache is never written."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def plugins():
    loaded = get_plugins()
    assert not loaded.failures, loaded.failures
    return loaded


def all_sampler_names() -> list[str]:
    """Every registered sampler written to the harness's contract: tests parametrised over
    it cover new plugins too. Adapted samplers (`library:name`: a diffusers scheduler, a
    k-diffusion function run as it is) are left out: they inherit their library's
    behaviour (host reads, noise, order), which their own tests pin."""
    return [name for name in get_plugins().samplers.names() if not is_adapted(name)]


def is_adapted(name: str) -> bool:
    """A sampler that runs another library's code as it is (`diffusers:DDIMScheduler`)."""
    return ":" in name


@pytest.fixture(params=["vp", "subvp", "ve", "edm"])
def sde(request):
    return make_sde(request.param)


@pytest.fixture
def ring(sde):
    return ring_2d(sde)


@pytest.fixture(scope="session")
def gmm64_vp():
    return mixture_64d(make_sde("vp"))
