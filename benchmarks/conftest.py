"""What every benchmark process shares with `harness run`: the host allocator's setting
(`harness.core.host_allocator`), applied before anything is timed."""

from __future__ import annotations

import pytest

from harness.core.host_allocator import keep_freed_memory


@pytest.fixture(scope="session", autouse=True)
def host_allocator_as_harness_run() -> str:
    return keep_freed_memory()
