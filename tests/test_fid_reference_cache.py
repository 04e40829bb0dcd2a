"""FID plumbing that moves numbers: the reference-statistics cache and the extractors' inputs.

A cache hit must give back exactly what was computed, a cache file must be read as
tensors only (never unpickled as code), and the Inception wrapper must hand the
network the uint8 RGB images its weights were trained on.
"""

from __future__ import annotations

import hashlib
import inspect
from unittest import mock

import pytest
import torch

from harness.metrics import fid


class NotATensor:
    """Something a weights-only load must refuse: a pickled instance of a class."""


def _features(n=40, dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen, dtype=torch.float64)


def test_cache_path_is_the_fid_folder_and_32_hex_digits_of_sha256_of_data_and_extractor(
        tmp_path, monkeypatch):
    key = hashlib.sha256(b"digits:test\nabc123").hexdigest()[:32]
    assert fid.cache_path("digits:test", "abc123", tmp_path) == tmp_path / "fid" / f"{key}.pt"
    monkeypatch.setenv(fid.CACHE_ENV, str(tmp_path / "env"))
    assert fid.cache_path("digits:test", "abc123") == tmp_path / "env" / "fid" / f"{key}.pt"


def test_a_cache_hit_gives_back_every_field_as_computed(tmp_path):
    x = _features()
    extractor = fid.IdentityFeatures(3)
    calls = []

    def images():
        calls.append(1)
        return x

    computed = fid.reference_stats("data:a", images, extractor, keep_features=True,
                                   cache_dir=tmp_path)
    hit = fid.reference_stats("data:a", images, extractor, keep_features=True,
                              cache_dir=tmp_path)
    assert len(calls) == 1                             # the features were in the file
    assert (computed.data_id, computed.extractor_sha256, computed.n) == (
        "data:a", extractor.sha256, 40)
    assert (hit.data_id, hit.extractor_sha256, hit.n) == ("data:a", extractor.sha256, 40)
    assert isinstance(hit.n, int)
    for name in ("features_sum", "features_cov_sum", "features"):
        assert torch.equal(getattr(hit, name), getattr(computed, name)), name
    # The sums are those of the features themselves (independent of the cache).
    torch.testing.assert_close(hit.features_sum, x.sum(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(hit.features_cov_sum, x.T @ x, rtol=0, atol=1e-12)


def test_two_reference_samples_are_enough_and_one_is_refused(tmp_path):
    extractor = fid.IdentityFeatures(3)
    nested = tmp_path / "not" / "yet"                  # the cache makes its own folders
    two = fid.reference_stats("data:two", lambda: _features(2), extractor, cache_dir=nested)
    assert two.n == 2 and fid.cache_path("data:two", extractor.sha256, nested).is_file()
    with pytest.raises(ValueError, match="at least two"):
        fid.reference_stats("data:one", lambda: _features(1), extractor, cache_dir=nested)


def test_a_cache_file_is_read_as_tensors_only(tmp_path):
    extractor = fid.IdentityFeatures(3)
    path = fid.cache_path("data:b", extractor.sha256, tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"data_id": "data:b", "extractor_sha256": extractor.sha256, "n": 2,
                "features_sum": torch.zeros(3), "features_cov_sum": torch.zeros(3, 3),
                "features": NotATensor()}, path)
    # A weights-only load refuses the pickled object: the file is treated as damaged,
    # said in a warning, and the statistics are computed again from the data.
    with pytest.warns(RuntimeWarning, match="unreadable \\(UnpicklingError"):
        stats = fid.reference_stats("data:b", _features, extractor,
                                    cache_dir=path.parent.parent)
    features = _features()
    assert stats.n == 40 and torch.equal(stats.features_sum, features.sum(0))


def test_inception_input_clips_quantises_and_repeats_grey_to_rgb():
    seen = {}

    def fake_inception(images):
        seen["images"] = images
        return torch.zeros(images.shape[0], 7)

    x = torch.tensor([[-1.5, -1.0, 0.0, 1.0], [0.25, -0.25, 3.0, -3.0]]).reshape(2, 1, 2, 2)
    fid._InceptionInput(fake_inception)(x)
    images = seen["images"]
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 2, 2)
    # round((clip(x, -1, 1) + 1) * 127.5), halves up: 0.25 -> 159.375 -> 159.
    expected = torch.tensor([[0, 0, 128, 255], [159, 96, 255, 0]], dtype=torch.uint8)
    for channel in range(3):
        assert torch.equal(images[:, channel].flatten(1), expected)


@pytest.mark.parametrize("feature", [None, 64])
def test_inception_extractor_loads_the_local_weights_it_is_named_after(tmp_path, feature):
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not really weights")
    inception = mock.MagicMock(name="NoTrainInceptionV3")
    with mock.patch("torchmetrics.image.fid.NoTrainInceptionV3", inception):
        extractor = (fid.inception_extractor(weights) if feature is None
                     else fid.inception_extractor(weights, feature=feature))
    expected_feature = 2048 if feature is None else feature   # pool3, FID's layer
    inception.assert_called_once_with(name="inception-v3-compat",
                                      features_list=[str(expected_feature)],
                                      feature_extractor_weights_path=str(weights),
                                      antialias=False)  # the reference graph's resize
    assert extractor.weights_sha256 == hashlib.sha256(b"not really weights").hexdigest()
    # The feature space is the weights and the preprocessing: the cache is keyed by both.
    assert extractor.sha256 != extractor.weights_sha256
    assert extractor.num_features == expected_feature
    assert extractor.extractor.inception is inception.return_value


def test_the_digits_extractor_defaults_to_the_cpu():
    extractor = fid.digits_extractor()
    assert {p.device.type for p in extractor.parameters()} == {"cpu"}


def test_kid_defaults_are_torchmetrics_defaults(tmp_path):
    # Binkowski et al. 2018 as torchmetrics implements it: 100 subsets of 1000, here
    # drawn from a generator seeded with 0.
    from torchmetrics.image.kid import KernelInceptionDistance

    theirs = inspect.signature(KernelInceptionDistance).parameters
    assert (theirs["subsets"].default, theirs["subset_size"].default) == (100, 1000)
    extractor = fid.IdentityFeatures(3)
    stats = fid.reference_stats("data:kid", _features, extractor, keep_features=True,
                                cache_dir=tmp_path)
    kid = fid.KID(extractor, stats)
    assert (kid.subsets, kid.subset_size, kid.seed) == (100, 1000, 0)


def test_kid_refuses_reference_statistics_it_cannot_use(tmp_path):
    extractor = fid.IdentityFeatures(3)
    bare = fid.reference_stats("data:c", _features, extractor, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"reference_stats\(keep_features=True\)"):
        fid.KID(extractor, bare)
    kept = fid.reference_stats("data:c", _features, extractor, keep_features=True,
                               cache_dir=tmp_path)
    with pytest.raises(ValueError, match="another extractor"):
        fid.KID(fid.IdentityFeatures(4), kept)


def test_the_default_cache_is_under_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(fid.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fid.default_cache_dir() == tmp_path / ".cache" / "harness"


def test_a_wrapped_extractor_stays_in_eval_mode():
    # Dropout or batch-norm statistics in training mode would make features random.
    wrapped = fid.Float64Features(torch.nn.Dropout(0.5), sha256="x", num_features=4)
    wrapped.train()
    assert not wrapped.training and not wrapped.extractor.training
    x = torch.ones(3, 4)
    assert torch.equal(wrapped(x), x.double())
