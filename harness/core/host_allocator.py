"""Keep freed host memory in the process, so a sampling loop does not fault its pages in
again at every step.

A sampler step on the CPU allocates a few state-sized tensors and frees them. With
glibc's default settings a freed block of more than 128 KiB goes back to the kernel
(munmap, or a trimmed heap top) and the next allocation of the same size faults in fresh
zeroed pages: on the 64-D oracle at batch 4096 (2 MiB per float64 state) `x + h * d`
then cost 1.8-2.6 ms where the arithmetic takes 0.13 ms, and the loop overhead of the
deterministic samplers measured 1.4-1.6 where their arithmetic alone is about 1.1.
PyTorch's CPU allocator is malloc, so the fix is glibc's own knobs (`mallopt`), as
PyTorch's performance guides recommend for CPU inference (there with jemalloc or
tcmalloc, which need a system package):

- M_MMAP_THRESHOLD 32 MiB (glibc's largest): blocks below it come from the heap, whose
  freed chunks are reused, instead of fresh mappings;
- M_TRIM_THRESHOLD 1 GiB: up to that much free memory at the heap top is kept, not
  returned to the kernel after every free.

The cost: a process's resident memory stays near its peak (plus at most 1 GiB) instead
of shrinking between trials. HARNESS_HOST_ALLOCATOR=system leaves glibc's defaults. The
setting changes no number, only where freed memory waits; a trial logs which is in force
(`describe`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: The environment variable that keeps glibc's defaults ("system"), and its values.
ALLOCATOR_ENV = "HARNESS_HOST_ALLOCATOR"
CHOICES = ("kept", "system")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30

_state: str | None = None


def keep_freed_memory() -> str:
    """Apply the settings once per process (unless HARNESS_HOST_ALLOCATOR=system);
    returns `describe()`."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def describe() -> str:
    """What the host allocator does in this process, for a trial's logged params."""
    return _state if _state is not None else "system (glibc defaults or not glibc)"


def _apply() -> str:
    choice = os.environ.get(ALLOCATOR_ENV, "kept").strip().lower() or "kept"
    if choice not in CHOICES:
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "system":
        return f"system ({ALLOCATOR_ENV}=system)"
    libc_name, _ = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        return f"system (not glibc: {platform.system()} {libc_name or 'unknown libc'})"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
          and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)
    if not ok:
        return "system (glibc refused mallopt)"
    return (f"glibc malloc, freed memory kept (mmap threshold {_MMAP_THRESHOLD >> 20} MiB, "
            f"trim threshold {_TRIM_THRESHOLD >> 20} MiB)")
