"""`harness run --save-samples DIR`: every sample of every trial as the PNG file EDM's
`generate.py` writes (folder per thousand, `(x * 127.5 + 128).clip(0, 255)` truncated to
8 bits), read back and compared with the samples the metrics measured; refused before
anything runs for a model whose samples are not images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.bench.recording.sample_images import sample_path, write_sample_images
from harness.core.model import DataSpec
from harness.plugin import manager as plugin_manager

from tests.bench_support import bench_environment, harness

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def bench(monkeypatch, tmp_path):
    yield from bench_environment(monkeypatch, tmp_path)


def _edm_png_values(x: np.ndarray) -> np.ndarray:
    """EDM's generate.py: (x * 127.5 + 128).clip(0, 255).to(uint8), channels last."""
    return np.clip(x.astype(np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)


def test_images_are_edms_bytes_in_edms_layout(tmp_path):
    # Values on EDM's level boundaries and beyond the range: truncation and clipping.
    levels = torch.tensor([-1.2, -1.0, -0.0039, 0.0, 0.0039, 0.5, 0.99, 1.0, 1.5])
    grey = levels.repeat(8)[:64].reshape(1, 1, 8, 8)
    colour = torch.stack((levels, -levels, levels / 2)).repeat(1, 8)[:, :64]
    colour = colour.reshape(1, 3, 8, 8)
    spec_grey = DataSpec((1, 8, 8), (-1.0, 1.0), levels=256)
    spec_colour = DataSpec((3, 8, 8), (-1.0, 1.0), levels=256)
    assert write_sample_images(grey, [1234], spec_grey, tmp_path / "grey") == 1
    assert write_sample_images(colour, [7], spec_colour, tmp_path / "colour") == 1
    assert sample_path(tmp_path / "grey", 1234) == tmp_path / "grey/001000/001234.png"

    read = np.asarray(PIL.open(tmp_path / "grey/001000/001234.png"))
    assert read.shape == (8, 8) and read.dtype == np.uint8  # grey stays one channel
    assert np.array_equal(read, _edm_png_values(grey[0, 0].numpy()))
    read = np.asarray(PIL.open(tmp_path / "colour/000000/000007.png"))
    assert read.shape == (8, 8, 3)
    assert np.array_equal(read, _edm_png_values(colour[0].permute(1, 2, 0).numpy()))
    assert not list(tmp_path.rglob("*.tmp"))  # written whole, renamed


def test_another_value_range_is_mapped_onto_minus_one_to_one(tmp_path):
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    write_sample_images(x, [0], DataSpec((1, 8, 8), (0.0, 1.0)), tmp_path)
    read = np.asarray(PIL.open(tmp_path / "000000/000000.png"))
    assert np.array_equal(read, _edm_png_values(2 * x[0, 0].numpy() - 1))


def test_a_run_writes_every_sample_as_the_metrics_saw_it(bench, tmp_path):
    suite = tmp_path / "images.toml"
    suite.write_text('model = "digits"\nsteps = [2]\nnum_samples = 6\nbatch_size = 4\n'
                     'seeds = [3]\ndevice = "cpu"\n[samplers.euler]\n[samplers.heun]\n'
                     '[metrics.fid]\n')
    out, images = tmp_path / "out", tmp_path / "images"
    assert harness("run", suite, "--out", out, "--save-samples", images,
                   "--quiet") == 0
    records = [json.loads(line) for line in (out / "images" / "trials.jsonl").open()]
    trials = [r for r in records if r.get("kind") == "trial" and r["sampler"] != "data"]
    assert {r["sampler"] for r in trials} == {"euler", "heun"}
    assert sorted(p.name for p in images.iterdir()) == sorted(r["name"] for r in trials)
    for record in trials:
        folder = images / record["name"]
        files = sorted(folder.rglob("*.png"))
        assert [f.relative_to(folder).as_posix() for f in files] == [
            f"000000/{i:06d}.png" for i in range(6)]
        assert (record["measured_params"]["sample_images"]
                == f"{folder} (6 PNG files, EDM's layout)")

    # The euler trial's samples, drawn again as the runner draws them (sample i
    # depends only on (seed, i)): the files hold EDM's bytes of them.
    from harness.core.sampling import generate
    from harness.core.schedules import make_grid
    from harness.models.pretrained import load_digits_model

    model = load_digits_model("cpu")
    loaded = plugin_manager.get_plugins()
    euler = loaded.samplers.get("euler")
    record = next(r for r in trials if r["sampler"] == "euler")
    grid = make_grid(model.sde, record["schedule"] or "karras", 2)
    with torch.no_grad():
        samples = generate(model, euler, grid, 3, range(6)).clamp(-1, 1)
    for i in range(6):
        read = np.asarray(PIL.open(images / record["name"] / f"000000/{i:06d}.png"))
        assert np.array_equal(read, _edm_png_values(samples[i, 0].numpy())), i


def test_a_model_whose_samples_are_not_images_is_refused_before_anything_runs(
        bench, tmp_path, capsys):
    suite = tmp_path / "oracle.toml"
    suite.write_text('model = "gmm-64d"\nsteps = [2]\nnum_samples = 4\ndevice = "cpu"\n'
                     '[samplers.euler]\n[metrics.mmd_oracle]\n')
    out = tmp_path / "out"
    assert harness("run", suite, "--out", out, "--save-samples", tmp_path / "images") == 2
    assert ("--save-samples writes images, (1 or 3, H, W); model 'gmm-64d' draws samples "
            "of shape (64,)") in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "images").exists()
