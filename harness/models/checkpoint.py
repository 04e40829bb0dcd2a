"""Weight files that cannot run code: safetensors tensors plus a JSON manifest beside them.

A checkpoint is two files with the same stem:

* ``NAME.safetensors``: the tensors only, written by `safetensors.torch.save` with no
  metadata, so the file's bytes are a function of the tensors alone (safetensors orders
  the header by name and dtype alignment) and equal weights give an equal sha256;
* ``NAME.json``: the manifest, a JSON object with at least

  - ``format_version``: `FORMAT_VERSION`;
  - ``file``: the name of the .safetensors file (no directory);
  - ``sha256``: the hex sha256 of that file, checked on every load;
  - ``metrics``: a free dict (accuracy, FID, wall time, ...);

  and whatever the writer adds: ``kind``, ``architecture`` (name + config to rebuild
  the network), ``sde`` (name + params), ``training`` (config), ``data`` (split rule).

Pickle is never used (torch.load of an untrusted file can execute code; safetensors
cannot). The hash check catches a truncated download, a file edited by hand or a file
swapped for another checkpoint's, and says which file and which two hashes differ.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import Tensor

from ..errors import HarnessError

FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
MANIFEST_SUFFIX = ".json"

PathLike = Union[str, Path]


class CheckpointError(HarnessError):
    """A checkpoint that cannot be used: missing, malformed or not what its manifest says."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The weights or the manifest of a checkpoint do not exist."""


class ManifestError(CheckpointError):
    """A manifest that is not valid JSON, lacks a required key or has an unknown version."""


class ChecksumError(CheckpointError):
    """The weight file's sha256 differs from the one its manifest records."""


@dataclass
class Checkpoint:
    """Verified tensors (on the requested device) and the manifest that describes them."""

    tensors: dict[str, Tensor]
    manifest: dict[str, Any]
    weights_path: Path
    manifest_path: Path
    sha256: str = field(default="")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def serialize(tensors: Mapping[str, Tensor]) -> bytes:
    """The exact bytes `save_checkpoint` writes for these tensors (CPU, contiguous copies)."""
    from safetensors.torch import save

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return save(cpu)


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 the weight file of these tensors would have; e.g. of a module's state_dict.

    Equal to the file hash recorded in a manifest, so a module loaded from a checkpoint
    can recompute its own identity (used to key cached reference statistics).
    """
    return sha256_bytes(serialize(tensors))


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """(weights, manifest) for a path to either file, or to their common stem."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, MANIFEST_SUFFIX):
        stem = path.with_suffix("")
    else:
        stem = path
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + MANIFEST_SUFFIX)


def save_checkpoint(path: PathLike, tensors: Mapping[str, Tensor],
                    manifest: Mapping[str, Any] | None = None) -> Checkpoint:
    """Write NAME.safetensors and NAME.json; returns the checkpoint as written.

    `manifest` holds the descriptive keys (architecture, sde, training, data, metrics,
    ...); ``format_version``, ``file`` and ``sha256`` are filled in here and override any
    given. The JSON is written with sorted keys so equal manifests are equal files.
    """
    weights_path, manifest_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    data = serialize(tensors)
    digest = sha256_bytes(data)
    # Write to a temporary name first: a crash mid-write must not leave a file whose
    # manifest claims a hash it does not have.
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(weights_path)
    full: dict[str, Any] = dict(manifest or {})
    full.setdefault("metrics", {})
    full.update(format_version=FORMAT_VERSION, file=weights_path.name, sha256=digest)
    write_manifest(manifest_path, full)
    return Checkpoint({k: v.detach().cpu() for k, v in tensors.items()}, full,
                      weights_path, manifest_path, digest)


def write_manifest(path: PathLike, manifest: Mapping[str, Any]) -> None:
    """Write a manifest as indented, key-sorted JSON with a trailing newline."""
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def read_manifest(path: PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint (path to either file or the stem), validated."""
    _, manifest_path = checkpoint_paths(path)
    if not manifest_path.is_file():
        raise CheckpointNotFoundError(f"checkpoint manifest not found: {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"manifest {manifest_path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"manifest {manifest_path} is not a JSON object")
    missing = [key for key in ("format_version", "file", "sha256") if key not in manifest]
    if missing:
        raise ManifestError(f"manifest {manifest_path} lacks {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {manifest_path} has format_version {manifest['format_version']!r}; "
            f"this harness reads version {FORMAT_VERSION}")
    return manifest


def _locate(path: PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """(weights path, manifest path, manifest); the weights named by the manifest exist."""
    weights_path, manifest_path = checkpoint_paths(path)
    if not weights_path.is_file() and not manifest_path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint not found: {Path(path)} (looked for {weights_path} and "
            f"{manifest_path})")
    manifest = read_manifest(manifest_path)
    # The manifest names its weight file; it must be the one beside it.
    weights_path = manifest_path.with_name(manifest["file"])
    if not weights_path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint weights not found: {weights_path} (named by {manifest_path})")
    return weights_path, manifest_path, manifest


def _check(weights_path: Path, manifest_path: Path, manifest: Mapping[str, Any],
           actual: str) -> None:
    expected = str(manifest["sha256"]).lower()
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {weights_path}: manifest {manifest_path.name} expects "
            f"sha256 {expected}, file has sha256 {actual}")


def load_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu") -> Checkpoint:
    """Verify a checkpoint's sha256 against its manifest, then load its tensors.

    `path` may name the .safetensors file, the .json manifest or their common stem.
    The bytes that are hashed are the bytes that are parsed, so what is loaded is what
    was verified even if the file changes on disk meanwhile. Raises
    `CheckpointNotFoundError` naming the missing path and `ChecksumError` naming the
    file, the expected (manifest) hash and the actual hash when they differ.
    """
    from safetensors.torch import load

    weights_path, manifest_path, manifest = _locate(path)
    data = weights_path.read_bytes()
    actual = sha256_bytes(data)
    _check(weights_path, manifest_path, manifest, actual)
    try:
        loaded = load(data)
    except Exception as err:  # SafetensorError, or a header that is not JSON
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"checkpoint {weights_path} is damaged: its sha256 matches {manifest_path.name} "
            f"but it is not a readable safetensors file ({type(err).__name__}: "
            f"{first[:200]}); the manifest was written for a damaged file, retrain or "
            f"restore it") from None
    tensors = {name: t.to(device) for name, t in loaded.items()}
    return Checkpoint(tensors, manifest, weights_path, manifest_path, actual)
