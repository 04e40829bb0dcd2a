"""The class-conditional Gaussian-mixture oracle against formulas written here: its
conditional denoiser, its Bayes classifier, its labelled reference data, and that the
unconditional oracles and presets it is built from are unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.model import NULL_LABEL
from harness.core.sde import make_sde
from harness.errors import ParameterError
from harness.models.oracle import (
    ConditionalGaussianMixture,
    GaussianMixture,
    conditional_64d,
    mixture_64d,
    overlapping_2d,
    ring_2d,
)

# Three classes in 3-D, unequal weights, diagonal stds: every term of the formulas shows.
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[0.0, 0.4, -0.2], [0.5, -0.3, 0.1], [-0.4, -0.1, 0.6]],
                     dtype=torch.float64)
STDS = torch.tensor([[0.3, 0.2, 0.4], [0.25, 0.35, 0.2], [0.4, 0.3, 0.3]],
                    dtype=torch.float64)

PINNED = {"gmm-64d": "c3d841b1644ee1aaa264b157144b7b60649499389e0018438c1cdf46d86eee15",
          "gmm-ring-2d": "bd06e3fec3eef65bcbe7738d57ca782682481be65354727477b5abef3847e0f3"}


def _model(sde_name="vp"):
    return ConditionalGaussianMixture(WEIGHTS, MEANS, STDS, make_sde(sde_name))


def _x(n=9, seed=0):
    return torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.7, 20.0])
def test_conditional_denoiser_is_the_single_gaussians_posterior_mean(sigma):
    """E[x_0 | x] for x = x_0 + sigma n, x_0 ~ N(mu_c, v_c): mu_c + v_c/(v_c + s^2)(x - mu_c)."""
    model = _model()
    x = _x()
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2])
    got = model.denoise_labelled(x, sigma, labels)
    var = STDS[labels] ** 2
    expected = MEANS[labels] + var / (var + sigma**2) * (x - MEANS[labels])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_null_rows_get_the_mixtures_denoiser_and_other_rows_their_class():
    model = _model()
    x = _x()
    labels = torch.tensor([NULL_LABEL, 1, NULL_LABEL, 2, 0, NULL_LABEL, 0, 1, 2])
    for sigma in (0.3, torch.linspace(0.1, 2.0, 9, dtype=torch.float64)):
        got = model.denoise_labelled(x, sigma, labels)
        null = labels == NULL_LABEL
        torch.testing.assert_close(got[null], model.denoise(x, sigma)[null], rtol=0, atol=0)
        each = [model.denoise_labelled(x[i:i + 1], sigma if isinstance(sigma, float)
                                       else sigma[i:i + 1], labels[i:i + 1])
                for i in range(9)]
        # Row i depends on its own label and level only (bit-identical alone).
        assert torch.equal(got, torch.cat(each))


def test_the_unconditional_side_is_the_mixture_exactly():
    """denoise/score of the conditional oracle are those of the same GaussianMixture."""
    cond, plain = _model("edm"), GaussianMixture(WEIGHTS, MEANS, STDS, make_sde("edm"))
    x = _x(16)
    for t in (0.01, 1.0, torch.linspace(0.01, 5.0, 16, dtype=torch.float64)):
        assert torch.equal(cond.score(x, t), plain.score(x, t))
        assert torch.equal(cond.denoise(x, t), plain.denoise(x, t))
    assert cond.num_classes == 3 and plain.num_classes == 0


def test_labels_of_the_wrong_shape_or_beyond_the_classes_are_refused():
    model = _model()
    x = _x(2)
    with pytest.raises(IndexError):
        model.denoise_labelled(x, 0.5, torch.tensor([0, 3]))
    with pytest.raises(ParameterError, match="shape"):
        model.denoise_labelled(x, 0.5, torch.tensor([0, 1, 2]))


def test_the_classifier_is_the_exact_posterior_over_components():
    """softmax(logits) = w_c N(x; mu_c, v_c) / sum_k w_k N(x; mu_k, v_k), from scipy-free
    formulas, and the logits themselves are log w_c + log N(x; mu_c, diag v_c)."""
    model = _model()
    classifier = model.classifier("cpu")
    x = _x(32, seed=3)
    var = STDS**2
    log_n = (-0.5 * ((x[:, None, :] - MEANS) ** 2 / var).sum(-1)
             - 0.5 * torch.log(2 * math.pi * var).sum(-1))
    logits = classifier(x)
    torch.testing.assert_close(logits, torch.log(WEIGHTS) + log_n, rtol=1e-12, atol=1e-12)
    joint = WEIGHTS * torch.exp(log_n)
    torch.testing.assert_close(torch.softmax(logits, 1), joint / joint.sum(1, keepdim=True))
    # It takes float32 samples and images of the data's shape alike.
    assert classifier(x.float()).dtype == torch.float64
    assert isinstance(classifier.sha256, str) and len(classifier.sha256) == 64
    assert classifier.name


def test_the_classifier_hash_names_its_parameters():
    first = _model().classifier().sha256
    assert _model("edm").classifier().sha256 == first  # the SDE is no part of it
    other = ConditionalGaussianMixture(WEIGHTS, MEANS, STDS * 1.01, make_sde("vp"))
    assert other.classifier().sha256 != first


def test_the_bayes_classifier_recovers_the_labels_of_exact_samples():
    """On well separated classes it is nearly always right; on the overlapping 2-D
    preset it is right as often as the Bayes rate (~ mean max posterior) says."""
    for model in (conditional_64d(make_sde("vp")), overlapping_2d(make_sde("vp"))):
        ref = model.reference_data("test", 4000, seed=0)
        logits = model.classifier()(ref.data)
        accuracy = float((logits.argmax(1) == ref.labels).double().mean())
        bayes = float(torch.softmax(logits, 1).max(1).values.mean())
        assert abs(accuracy - bayes) < 4 * math.sqrt(bayes * (1 - bayes) / 4000) + 1e-3
    assert bayes < 0.9  # the 2-D classes do overlap: guidance has something to do


def test_reference_data_carry_the_component_of_each_sample():
    model = _model()
    ref = model.reference_data("test", 3000, seed=1)
    assert ref.exact and ref.labels.dtype == torch.int64 and ref.labels.shape == (3000,)
    # Class frequencies are the weights; each class's samples are its Gaussian.
    counts = torch.bincount(ref.labels, minlength=3).double()
    assert ((counts / 3000 - WEIGHTS).abs() < 4 * (WEIGHTS / 3000).sqrt()).all()
    for c in range(3):
        rows = ref.data[ref.labels == c]
        z = (rows.mean(0) - MEANS[c]) / (STDS[c] / math.sqrt(rows.shape[0]))
        assert z.abs().max() < 4.5
        assert ((rows.std(0) / STDS[c] - 1).abs() < 0.15).all()
    # The samples are those of the unconditional mixture with the same parameters.
    plain = GaussianMixture(WEIGHTS, MEANS, STDS, make_sde("vp")).reference_data(
        "test", 3000, seed=1)
    assert torch.equal(plain.data, ref.data) and plain.data_id == ref.data_id
    assert plain.labels is None


def test_the_64d_conditional_preset_is_gmm_64d_and_gmm_64d_is_unchanged():
    sde = make_sde("vp")
    plain, cond = mixture_64d(sde), conditional_64d(sde)
    assert type(plain) is GaussianMixture and cond.num_classes == 8
    for name in ("weights", "means", "variances"):
        assert torch.equal(getattr(plain, name), getattr(cond, name))
    # The presets' parameters, pinned (sha256 of weights, means, variances as float64,
    # taken before the conditional oracle was added): their results stay comparable.
    assert plain.digest() == PINNED["gmm-64d"]
    assert ring_2d(sde).digest() == PINNED["gmm-ring-2d"]


def test_the_2d_preset_classes_overlap_and_guidance_separates_them():
    """On gmm-cond-2d the guided target at w > 1 puts each class's mass farther from the
    others than its own component: the per-class mean of p_w(x | c) proportional to
    p(x | c)^w p(x)^(1 - w), found on a grid, moves outwards as w grows."""
    model = overlapping_2d(make_sde("vp"))
    assert model.num_classes == 3
    axis = torch.linspace(-3, 3, 601, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    var = model.variances
    log_c = (-0.5 * ((grid[:, None, :] - model.means) ** 2 / var).sum(-1)
             - 0.5 * torch.log(2 * math.pi * var).sum(-1))
    log_p = torch.logsumexp(torch.log(model.weights) + log_c, 1)
    radius = []
    for w in (1.0, 2.0, 4.0):
        log_target = w * log_c[:, 0] + (1 - w) * log_p
        prob = torch.softmax(log_target, 0)
        radius.append(float((prob[:, None] * grid).sum(0).norm()))
    assert radius[0] == pytest.approx(float(model.means[0].norm()), rel=1e-3)
    assert radius[0] < radius[1] - 0.05 < radius[2] - 0.1


@pytest.mark.parametrize("name, classes", [("gmm-cond-2d", 3), ("gmm-cond-64d", 8),
                                           ("gmm-ring-2d", 0), ("gmm-64d", 0)])
def test_presets_declare_the_classes_their_models_have(plugins, name, classes):
    spec = plugins.models.get(name)
    model = spec.build("cpu", sde="edm")
    assert spec.num_classes == model.num_classes == classes
    assert model.sde.name == "edm" and model.reference_is_exact
