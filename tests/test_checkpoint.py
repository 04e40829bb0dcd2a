"""Checkpoints: safetensors + JSON manifest round trip, and every way a file is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from harness.models.checkpoint import (
    FORMAT_VERSION, CheckpointNotFoundError, ChecksumError, ManifestError, file_sha256,
    load_checkpoint, save_checkpoint, tensors_sha256,
)
from harness.errors import HarnessError


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(4, 3, generator=g), "layer.bias": torch.zeros(4),
            "steps": torch.arange(3)}


def _save(tmp_path, name="model", seed=0):
    manifest = {"kind": "test", "architecture": {"name": "toy", "config": {"width": 4}},
                "metrics": {"accuracy": 0.5}}
    return save_checkpoint(tmp_path / name, _tensors(seed), manifest)


def test_round_trip_keeps_tensors_and_manifest(tmp_path):
    written = _save(tmp_path)
    assert written.weights_path == tmp_path / "model.safetensors"
    assert written.manifest_path == tmp_path / "model.json"
    for path in (tmp_path / "model", written.weights_path, written.manifest_path):
        loaded = load_checkpoint(path)
        assert loaded.tensors.keys() == _tensors(0).keys()
        for name, tensor in _tensors(0).items():
            assert torch.equal(loaded.tensors[name], tensor)
        assert loaded.manifest["architecture"] == {"name": "toy", "config": {"width": 4}}
        assert loaded.metrics == {"accuracy": 0.5}
        assert loaded.manifest["format_version"] == FORMAT_VERSION
        assert loaded.manifest["file"] == "model.safetensors"
    manifest = json.loads(written.manifest_path.read_text())
    assert manifest["sha256"] == file_sha256(written.weights_path) == written.sha256
    # The recorded hash is a function of the tensors alone.
    assert tensors_sha256(_tensors(0)) == written.sha256
    assert tensors_sha256(dict(reversed(list(_tensors(0).items())))) == written.sha256
    assert load_checkpoint(tmp_path / "model").sha256 == written.sha256


def test_weight_file_is_not_a_pickle(tmp_path):
    written = _save(tmp_path)
    header_length = int.from_bytes(written.weights_path.read_bytes()[:8], "little")
    header = json.loads(written.weights_path.read_bytes()[8:8 + header_length])
    assert set(header) == set(_tensors(0))


def test_corrupted_file_is_refused_naming_file_and_both_hashes(tmp_path):
    written = _save(tmp_path)
    data = bytearray(written.weights_path.read_bytes())
    data[-1] ^= 0xFF
    written.weights_path.write_bytes(bytes(data))
    actual = file_sha256(written.weights_path)
    with pytest.raises(ChecksumError) as info:
        load_checkpoint(written.weights_path)
    message = str(info.value)
    assert str(written.weights_path) in message
    assert written.sha256 in message and actual in message
    assert isinstance(info.value, HarnessError)


def test_swapped_file_is_refused(tmp_path):
    first = _save(tmp_path, "first", seed=0)
    second = _save(tmp_path, "second", seed=1)
    shutil.copyfile(second.weights_path, first.weights_path)
    with pytest.raises(ChecksumError, match=second.sha256):
        load_checkpoint(tmp_path / "first")
    # The untouched checkpoint still loads.
    assert load_checkpoint(second.manifest_path).sha256 == second.sha256


def test_nonexistent_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(CheckpointNotFoundError, match="nowhere"):
        load_checkpoint(missing)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic callers
        load_checkpoint(missing)


def test_missing_weights_or_manifest_are_named(tmp_path):
    written = _save(tmp_path)
    written.weights_path.unlink()
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        load_checkpoint(written.manifest_path)
    other = _save(tmp_path, "other")
    other.manifest_path.unlink()
    with pytest.raises(CheckpointNotFoundError, match="other.json"):
        load_checkpoint(other.weights_path)


def test_malformed_manifests_are_refused(tmp_path):
    written = _save(tmp_path)
    manifest = json.loads(written.manifest_path.read_text())
    written.manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ManifestError, match="format_version 99"):
        load_checkpoint(written.weights_path)
    written.manifest_path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_checkpoint(written.weights_path)
    del manifest["sha256"]
    written.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="sha256"):
        load_checkpoint(written.weights_path)


def test_load_to_device_and_manifest_keys_cannot_be_overridden(tmp_path):
    written = save_checkpoint(tmp_path / "m", _tensors(0), {"sha256": "bogus", "file": "x"})
    assert written.manifest["sha256"] == file_sha256(written.weights_path)
    assert written.manifest["file"] == "m.safetensors"
    loaded = load_checkpoint(tmp_path / "m", device="cpu")
    assert all(t.device.type == "cpu" for t in loaded.tensors.values())
