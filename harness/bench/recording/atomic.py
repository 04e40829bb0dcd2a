"""Writing results so that a failure never leaves a torn, empty or half-written file.

Every file of a result is written to a temporary name in its own folder and renamed
over the final name once complete (a rename within a folder is atomic on POSIX and on
Windows), so readers see the old file or the new one, never a part. A JSON line that
cannot be written completely (a full disk) is cut back off the file, so `trials.jsonl`
never ends in a torn line. `check_writable` is the pre-flight check run before any
compute: it writes and removes a probe file, so a read-only folder, a path that names a
file, or a full disk is reported before minutes of sampling, not after.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from ...errors import HarnessError

PathLike = Union[str, "os.PathLike[str]"]
#: Probe size for the pre-flight check (one block): a disk that cannot take it is full.
PROBE_BYTES = 4096


class OutputError(HarnessError):
    """A results location that cannot be written; says which path and why."""


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` if the block
    succeeds, removed if it raises. The temporary name keeps the suffix, so writers that
    choose a format from it (matplotlib) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_file(path)
    try:
        yield Path(temporary)
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def append_complete(path: PathLike, data: bytes) -> None:
    """Append `data` and force it to disk, or leave the file exactly as it was: a write
    cut short (no space left) is truncated back off before the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: a buffered file would retry its leftover bytes when asked to truncate.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.lseek(descriptor, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, size)
            raise
    finally:
        os.close(descriptor)


def publish_folder(staging: PathLike, target: PathLike) -> list[Path]:
    """Move every file of `staging` into `target` (same file system: each move is an
    atomic rename) and remove `staging`; returns the moved files' new paths."""
    staging, target = Path(staging), Path(target)
    moved = []
    for source in sorted(p for p in staging.rglob("*") if p.is_file()):
        destination = target / source.relative_to(staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _fsync_file(source)
        os.replace(source, destination)
        moved.append(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return moved


def check_writable(folder: PathLike, what: str = "results folder") -> Path:
    """Write, sync and remove a probe file in `folder`, or in its nearest existing
    ancestor if it does not exist yet (a refused run leaves no folder behind); raises
    `OutputError` naming the folder and the reason, before anything is computed."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise OutputError(f"the {what} {str(folder)!r} cannot be created: "
                          f"{str(existing)!r} is a file; pass another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        # The OS's own reason, and advice that follows from it: "free space" only for a
        # full disk (a virtual file system like /proc says ENOENT, a mount EROFS, ...).
        reason = f"[Errno {err.errno}] {err.strerror}" if err.strerror else repr(err)
        full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        advice = "free space or pass another --out" if full else "pass another --out"
        raise OutputError(f"the {what} {str(folder)!r} is not writable: a file cannot be "
                          f"created in {str(existing)!r} ({reason}); {advice}; nothing "
                          f"was computed") from None
    return folder


def _new_file(path: Path) -> str:
    """A new empty file beside `path`, named `.STEM.RANDOM.SUFFIX`, with the mode a plain
    `open` would give it (mkstemp's 0600 would make results private to their writer)."""
    for _ in range(100):
        name = path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(name)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _fsync_file(path: PathLike) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
