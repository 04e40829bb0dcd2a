"""Files of a model folder, found or refused, and checked against the user's sha256 pins.

A user who has downloaded a checkpoint may know the sha256 of its weight files (from the
publisher, or from a first load they trust). Pins are given as a mapping from a file's
path relative to the model folder to its hex sha256, or as the text
``"vae/diffusion_pytorch_model.safetensors:HEX,transformer/...:HEX"`` that a command-line
option carries. Every pinned file is hashed and compared BEFORE anything reads it as
weights: a file whose hash differs (a truncated download, another checkpoint's file, a
file edited by hand) is refused, naming the file and both hashes. A pin naming a file
that does not exist is refused with the folder's listing, as is any required file that
is missing, so that a typo or a wrong layout says what is there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Optional, Union

from .checkpoint import CheckpointNotFoundError, ChecksumError, file_sha256

Pins = Union[None, str, Mapping[str, str]]


def parse_pins(pins: Pins) -> dict[str, str]:
    """{relative path: lower-case hex sha256} from a mapping, the option text, or None."""
    if pins is None:
        return {}
    if isinstance(pins, str):
        pairs = [item.rsplit(":", 1) for item in pins.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ChecksumError(f"sha256 pins must read 'FILE:HEX,FILE:HEX', got {pins!r}")
        pins = dict(pairs)
    parsed = {str(name).strip(): str(digest).strip().lower()
              for name, digest in pins.items()}
    for name, digest in parsed.items():
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ChecksumError(f"sha256 pin for {name!r} is not 64 hex digits: {digest!r}")
    return parsed


def listing(folder: Path) -> str:
    """The folder's files (relative paths, two levels down), for error messages."""
    if not folder.is_dir():
        return f"{folder} does not exist"
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and len(p.relative_to(folder).parts) <= 2)
    return f"{folder} holds: {', '.join(names) if names else 'nothing'}"


def require_file(folder: Path, relative: str, what: str) -> Path:
    """`folder / relative`, refused with the folder's listing when it is not a file."""
    path = folder / relative
    if not path.is_file():
        raise CheckpointNotFoundError(f"{what} not found: {path} ({listing(folder)})")
    return path


def check_pins(folder: Path, pins: Mapping[str, str]) -> None:
    """Refuse a pinned file that is missing or whose sha256 is not its pin."""
    for relative, expected in pins.items():
        path = require_file(folder, relative, "pinned file")
        actual = file_sha256(path)
        if actual != expected:
            raise ChecksumError(f"{path} has sha256 {actual}, not the pinned {expected}: "
                                f"refusing to load it")


def files_sha256(folder: Path, files: list[Path], pins: Optional[Mapping[str, str]] = None
                 ) -> str:
    """One sha256 naming these weight files: of the lines "relative path:file sha256",
    sorted. Pinned files were checked already (`check_pins`); their pins are reused."""
    pins = pins or {}
    lines = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        lines.append(f"{relative}:{pins.get(relative) or file_sha256(path)}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
