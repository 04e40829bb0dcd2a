"""The conformance kit on every diffusers registration, its verdicts pinned."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from harness.testing import CHECKS, check_sampler

pytest.importorskip("diffusers")

#: diffusers calls NumPy on tensors inside its steps (NumPy 2 deprecations, thousands per
#: run), and torchsde notes every Brownian-tree query a float32 rounding puts outside its
#: interval: the library's own noise, filtered here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore:Should have:UserWarning")

#: The kit's convergence budget: fewer steps and samples than its defaults (100, 2000),
#: enough for its moment and sliced-W2 tests to tell the schedulers apart.
STEPS, SAMPLES = 32, 400

#: Checks not run, and why: the kit's weak order is a Monte Carlo estimate over 20000
#: samples, and per-sample generators cost a Python call per sample and step (1-3 min
#: each; measured once, these pass as order 0 but LCM and TCD, which cannot take the
#: kit's 64 or more steps); per-sample Brownian trees cost even more (convergence: ~15 s).
SEEDED = ("order",)
TREES = ("order", "convergence")
NOT_RUN = {
    "DDPMScheduler": SEEDED, "DDPMParallelScheduler": SEEDED, "LCMScheduler": SEEDED,
    "TCDScheduler": SEEDED, "SASolverScheduler": SEEDED,
    "EulerAncestralDiscreteScheduler": SEEDED, "KDPM2AncestralDiscreteScheduler": SEEDED,
    "EulerDiscreteScheduler_churn": SEEDED, "EDMEulerScheduler_churn": SEEDED,
    "DPMSolverSinglestepScheduler_sde": SEEDED,
    "EDMDPMSolverMultistepScheduler_sde": SEEDED,
    "DPMSolverSDEScheduler": TREES, "CosineDPMSolverMultistepScheduler": TREES,
}


class Verdict(NamedTuple):
    """A failing check: a fragment of its message, and why it fails."""

    fragment: str
    why: str


CLIPPED = Verdict("the sample", "clip_sample = True (diffusers' default) clips each x_0 "
                  "estimate to [-1, 1]; the mixture reaches beyond (passes with "
                  "clip_sample = False)")
CHURN = Verdict("final step leaves noise in", "diffusers' churn adds its noise after the "
                "network call (Karras et al.'s Algorithm 2 adds it before), so the last "
                "step's noise stays in the output")
PRK = Verdict("cannot run 1 step", "its Runge-Kutta warm-up (skip_prk_steps = False, the "
              "default) needs 4 steps; the kit asks for 1")
#: (registration, settings) -> {check that fails: (a fragment of its message, why)};
#: every other check run passes, or is skipped by the kit because of these.
VERDICTS: dict[tuple[str, tuple], dict[str, Verdict]] = {
    ("CogVideoXDDIMScheduler", ()): {},
    ("CosineDPMSolverMultistepScheduler", ()): {},
    ("DDIMParallelScheduler", ()): {"convergence": CLIPPED},
    ("DDIMParallelScheduler_eta", ()): {"convergence": CLIPPED},
    ("DDIMScheduler", ()): {"convergence": CLIPPED},
    ("DDIMScheduler", (("clip_sample", False),)): {},
    ("DDIMScheduler_eta", ()): {"convergence": CLIPPED},
    ("DDPMParallelScheduler", ()): {"convergence": CLIPPED},
    ("DDPMScheduler", ()): {"convergence": CLIPPED},
    ("DDPMScheduler", (("clip_sample", False),)): {},
    ("DEISMultistepScheduler", ()): {},
    ("DPMSolverMultistepScheduler", ()): {},
    ("DPMSolverMultistepScheduler_sde", ()): {},
    ("DPMSolverSDEScheduler", ()): {},
    ("DPMSolverSinglestepScheduler", ()): {},
    ("DPMSolverSinglestepScheduler_sde", ()): {},
    ("EDMDPMSolverMultistepScheduler", ()): {},
    ("EDMDPMSolverMultistepScheduler_sde", ()): {},
    ("EDMEulerScheduler", ()): {},
    ("EDMEulerScheduler_churn", ()): {"final_step": CHURN},
    ("EulerAncestralDiscreteScheduler", ()): {},
    ("EulerDiscreteScheduler", ()): {},
    ("EulerDiscreteScheduler_churn", ()): {"final_step": CHURN},
    ("HeunDiscreteScheduler", ()): {},
    ("KDPM2AncestralDiscreteScheduler", ()): {},
    ("KDPM2DiscreteScheduler", ()): {},
    ("LCMScheduler", ()): {},
    ("LMSDiscreteScheduler", ()): {},
    ("PNDMScheduler", ()): {"registration": PRK},
    ("PNDMScheduler", (("skip_prk_steps", True),)): {},
    ("SASolverScheduler", ()): {},
    ("TCDScheduler", ()): {},
    ("UniPCMultistepScheduler", ()): {},
}


def test_the_table_covers_every_registration(plugins):
    names = {n[10:] for n in plugins.samplers.names() if n.startswith("diffusers:")}
    assert {name for name, _ in VERDICTS} == names


@pytest.mark.parametrize("name, settings", list(VERDICTS),
                         ids=[n + "".join(f"-{k}={v}" for k, v in s) for n, s in VERDICTS])
def test_the_kit_verdicts_are_the_pinned_ones(name, settings):
    checks = [c for c in CHECKS if c not in NOT_RUN.get(name, ())]
    report = check_sampler(f"diffusers:{name}", dict(settings), checks=checks, steps=STEPS,
                           samples=SAMPLES, raise_on_failure=False)
    expected = VERDICTS[(name, settings)]
    failed = {r.name: r.message for r in report.results if r.status == "failed"}
    assert set(failed) == set(expected), failed
    for check, verdict in expected.items():
        assert verdict.fragment in failed[check]
    for result in report.results:
        assert result.status in ("passed", "failed", "skipped"), str(result)
        assert result.status != "skipped" or failed, str(result)
