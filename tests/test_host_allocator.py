"""The host allocator keeps freed memory: a loop that allocates and frees state-sized
tensors stops faulting pages in (counted by the kernel, not timed), and the setting can
be declined. Each case runs in its own process: the setting is process-wide."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from harness.core import host_allocator
from harness.core.host_allocator import ALLOCATOR_ENV

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

#: Euler on the 64-D oracle at batch 4096 (a 2 MiB float64 state, 16 MiB temporaries in
#: the network): the minor page faults of thirty 10-step runs after two warm ones, and the
#: allocator's state.
LOOP = """
import json, resource, torch
from harness.core import host_allocator
state = host_allocator.keep_freed_memory()
from harness.core.sampling import generate
from harness.core.schedules import make_grid
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d
from harness.plugin.manager import get_plugins
torch.set_num_threads(1)
model = mixture_64d(make_sde("vp"))
euler = get_plugins().samplers.get("euler")
grid = make_grid(model.sde, "karras", 10)
for _ in range(2):
    generate(model, euler, grid, seed=0, indices=range(4096))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    generate(model, euler, grid, seed=0, indices=range(4096))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "state": state, "described": host_allocator.describe()}))
"""


def _loop(monkeypatch, choice: str | None) -> dict:
    env_name = ALLOCATOR_ENV
    if choice is None:
        monkeypatch.delenv(env_name, raising=False)
    else:
        monkeypatch.setenv(env_name, choice)
    out = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@glibc
def test_kept_memory_stops_the_page_faults_of_a_sampling_loop(monkeypatch):
    kept = _loop(monkeypatch, None)
    # glibc's defaults fault 400-8000 pages a run here, growing with the runs (0.2-1.8
    # MiB of fresh memory a step: `HARNESS_HOST_ALLOCATOR=system`, or this module with
    # `mallopt` not called), so at least 12,000 in thirty runs; kept, 0-3300 once (what
    # is still first touched, however many runs follow).
    assert kept["faults"] <= 8000, kept
    assert kept["state"] == kept["described"]
    assert kept["state"] == ("glibc malloc, freed memory kept (mmap threshold 32 MiB, "
                             "trim threshold 1024 MiB)")


def test_the_system_choice_changes_nothing(monkeypatch):
    system = _loop(monkeypatch, "system")
    assert system["state"] == system["described"] == f"system ({ALLOCATOR_ENV}=system)"


def test_an_unknown_choice_is_refused(monkeypatch):
    monkeypatch.setattr(host_allocator, "_state", None)
    monkeypatch.setenv(ALLOCATOR_ENV, "jemalloc")
    with pytest.raises(ValueError, match=f"{ALLOCATOR_ENV}='jemalloc': expected one of "
                                         "kept, system"):
        host_allocator.keep_freed_memory()
