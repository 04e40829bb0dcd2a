"""A third-party function's keyword arguments as a sampler's checked hyperparameters."""

from __future__ import annotations

import inspect
from typing import List, Literal, Optional, Union

import pytest
import torch

from harness import Capabilities, ParameterError, Sampler
from harness.core.foreign_params import foreign_params


class Scheduler:
    """Shaped like a library's scheduler: annotated, some arguments set by the harness,
    one that cannot be written in a suite."""

    def __init__(self, num_train_timesteps: int = 1000,
                 trained_betas: Optional[Union[torch.Tensor, List[float]]] = None,
                 solver_order: int = 2, algorithm_type: Literal["a", "b"] = "a",
                 lambda_min_clipped: float = -float("inf"), variance_type: str = None,
                 thresholding: bool = False, callback=print, **kwargs):
        pass


def sample_fn(model, x, sigmas, extra_args=None, noise_sampler=None, eta=1.0, order=4,
              solver_type="midpoint", flag=False):
    """Shaped like k-diffusion's: nothing annotated."""


TAKEN = {"num_train_timesteps": "the model's process fixes it"}
FN_TAKEN = {"model": "the harness's denoiser", "x": "the initial state",
            "sigmas": "the harness's grid", "extra_args": "none",
            "noise_sampler": "the harness's per-sample noise"}


@pytest.fixture(scope="module")
def scheduler_params():
    return foreign_params("Scheduler", Scheduler.__init__, taken=TAKEN,
                          docs={"solver_order": "the multistep order"})


def test_a_signature_with_postponed_annotations_is_resolved_from_its_function():
    # This module postpones annotations: its signatures hold strings, the function knows.
    unresolved = foreign_params("Scheduler", inspect.signature(Scheduler.__init__),
                                taken=TAKEN)
    assert [row["name"] for row in unresolved.describe()] == []
    assert "solver_order" in unresolved.unsupported


def test_fields_are_the_settable_keywords_with_library_defaults(scheduler_params):
    rows = {row["name"]: row for row in scheduler_params.describe()}
    assert list(rows) == ["solver_order", "algorithm_type", "lambda_min_clipped",
                          "variance_type", "thresholding"]
    assert rows["solver_order"]["default"] == 2
    assert rows["solver_order"]["doc"] == "the multistep order"
    defaults = scheduler_params()
    assert (defaults.solver_order, defaults.algorithm_type, defaults.thresholding,
            defaults.variance_type) == (2, "a", False, None)
    assert defaults.lambda_min_clipped == -float("inf")
    assert defaults.changed() == {}


def test_values_are_checked_strictly_before_use(scheduler_params):
    chosen = scheduler_params.from_mapping({"solver_order": 3, "algorithm_type": "b",
                                            "variance_type": "learned"})
    assert chosen.changed() == {"solver_order": 3, "algorithm_type": "b",
                                "variance_type": "learned"}
    with pytest.raises(ParameterError, match="'solver_order' must be an integer"):
        scheduler_params.from_mapping({"solver_order": "3"})
    with pytest.raises(ParameterError, match="algorithm_type"):
        scheduler_params.from_mapping({"algorithm_type": "c"})
    with pytest.raises(ParameterError, match="'thresholding' must be true or false"):
        scheduler_params.from_mapping({"thresholding": 1})
    # A library annotating `str` with default None: a string or unset.
    assert scheduler_params.from_mapping({"variance_type": None}).variance_type is None


def test_a_typo_lists_the_valid_keywords(scheduler_params):
    with pytest.raises(ParameterError) as err:
        scheduler_params.from_mapping({"solver_ordr": 3})
    message = str(err.value)
    assert "unknown parameter 'solver_ordr'" in message and "'solver_order'" in message
    for name in ("algorithm_type", "lambda_min_clipped", "thresholding", "variance_type"):
        assert name in message


def test_what_the_harness_sets_and_what_a_suite_cannot_write_are_refused_with_why(
        scheduler_params):
    with pytest.raises(ParameterError, match="'num_train_timesteps' is set by the harness: "
                                             "the model's process fixes it"):
        scheduler_params.from_mapping({"num_train_timesteps": 10})
    for name in ("trained_betas", "callback"):
        with pytest.raises(ParameterError, match=f"'{name}' .* cannot be set from a suite"):
            scheduler_params.from_mapping({name: None})


def test_unannotated_keywords_take_their_type_from_the_default():
    params = foreign_params("sample_fn", inspect.signature(sample_fn), taken=FN_TAKEN)
    assert [row["name"] for row in params.describe()] == ["eta", "order", "solver_type",
                                                         "flag"]
    assert params.from_mapping({"eta": 0}).eta == 0.0  # an integer for a float: a float
    with pytest.raises(ParameterError, match="'order' must be an integer"):
        params.from_mapping({"order": 2.5})
    with pytest.raises(ParameterError, match="'solver_type' must be a string"):
        params.from_mapping({"solver_type": 1})


def test_a_positional_input_the_adapter_forgot_is_an_error_at_registration():
    with pytest.raises(ParameterError, match="'sigmas' has no default"):
        foreign_params("sample_fn", inspect.signature(sample_fn),
                       taken={k: v for k, v in FN_TAKEN.items() if k != "sigmas"})


def test_an_adapted_sampler_is_named_after_its_library():
    caps = Capabilities(stochastic=False, order=1)
    assert Sampler("diffusers:DDIMScheduler", lambda *a: None, caps).name == \
        "diffusers:DDIMScheduler"
    for bad in ("a:b:c", ":DDIM", "diffusers:", "diffusers:DD IM"):
        with pytest.raises(ParameterError, match="at most one 'library:' prefix"):
            Sampler(bad, lambda *a: None, caps)
