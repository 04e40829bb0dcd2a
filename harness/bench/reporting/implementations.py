"""One method, several implementations: the leaderboard's side-by-side section.

The same numerical method ships in the harness (a built-in written from its paper), in
diffusers (a scheduler) and in k-diffusion (a sampling function), and the three differ in
what users report as bugs: where the last step lands, how the steps are spaced, which
steps drop to a lower order, what a step costs. When a board holds a method as two or
more libraries implement it, its page gets a section for the method with their rows next
to each other at each NFE, and the method's note says where they differ by design, so
that a gap between them is read as a difference of implementation, not of method.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .comparison import BEST, TIED
from ..recording.record import FLOOR_NAME


@dataclass(frozen=True)
class Method:
    """A method and the samplers that implement it; `note`: where they differ."""

    name: str
    samplers: tuple[str, ...]
    note: str


METHODS: tuple[Method, ...] = (
    Method("Euler / DDIM (first order)",
           ("euler", "ddim", "kdiffusion:euler", "diffusers:EulerDiscreteScheduler",
            "diffusers:DDIMScheduler"),
           "Under the EDM variable DDIM is Euler's method. The built-ins and k-diffusion "
           "step on the suite's grid; diffusers' schedulers choose their own timesteps "
           "(`timestep_spacing`) from a 1000-level training table."),
    Method("Heun (2nd order, last step Euler)",
           ("heun", "kdiffusion:heun", "diffusers:HeunDiscreteScheduler"),
           "All spend 2N - 1 evaluations for N steps to sigma = 0."),
    Method("DPM2 (2nd order, midpoint in log sigma)",
           ("kdiffusion:dpm_2", "diffusers:KDPM2DiscreteScheduler"),
           "Both spend 2N - 1 evaluations for N steps to sigma = 0."),
    Method("Linear multistep (LMS, order 4)",
           ("kdiffusion:lms", "diffusers:LMSDiscreteScheduler"),
           "Both integrate the multistep coefficients numerically over sigma."),
    Method("DPM-Solver++(2M)",
           ("dpmpp_2m", "kdiffusion:dpmpp_2m", "diffusers:DPMSolverMultistepScheduler"),
           "diffusers' scheduler steps on its own timesteps (with `use_karras_sigmas`, a "
           "Karras grid of its own) and drops to first order on the last step below 15 "
           "steps (`lower_order_final`)."),
    Method("DPM-Solver++(2M) SDE",
           ("dpmpp_2m_sde", "kdiffusion:dpmpp_2m_sde",
            "diffusers:DPMSolverMultistepScheduler_sde"),
           "All inject the harness's per-sample noise; k-diffusion's Brownian tree is "
           "replaced by it."),
    Method("UniPC", ("unipc", "diffusers:UniPCMultistepScheduler"),
           "The built-in is checked against diffusers' scheduler on the harness's grid; "
           "here diffusers runs on its own timesteps."),
    Method("Euler ancestral",
           ("euler_ancestral", "kdiffusion:euler_ancestral",
            "diffusers:EulerAncestralDiscreteScheduler"),
           "Each draws fresh noise per step from the harness's per-sample streams."),
)


def side_by_side(board: pd.DataFrame, metric: str = "fid",
                 methods: tuple[Method, ...] = METHODS) -> str:
    """A Markdown section per method implemented by two or more libraries on the board:
    one row per implementation and step count, ordered by counted NFE; "" when none."""
    if board.empty or f"{metric}_mean" not in board:
        return ""
    sections = []
    for method in methods:
        rows = board[board["sampler"].isin(method.samplers)
                     & (board["sampler"] != FLOOR_NAME)]
        if rows["sampler"].map(library).nunique() < 2:
            continue
        nfe = rows["nfe_mean"] if "nfe_mean" in rows else rows["steps"]
        rows = rows.assign(_nfe=nfe, _order=rows["sampler"].map(method.samplers.index))
        lines = [f"### {method.name}", "",
                 f"| NFE | implementation | steps | {metric} [95 % interval] |",
                 "|---|---|---|---|"]
        for _, row in rows.sort_values(["_nfe", "_order", "label"]).iterrows():
            lines.append(f"| {row['_nfe']:g} | `{row['label']}` | {row['steps']} | "
                         f"{_interval(row, metric)} |")
        lines += ["", method.note, ""]
        sections.append("\n".join(lines))
    if not sections:
        return ""
    return ("\n## Same method, different implementations\n\n"
            "Rows of one method at each NFE, from the board above (marks as there).\n\n"
            + "\n".join(sections))


def library(sampler: str) -> str:
    """Whose implementation a sampler is: the prefix of an adapted one, else the
    harness's."""
    return sampler.split(":", 1)[0] if ":" in sampler else "harness"


def _interval(row: pd.Series, metric: str) -> str:
    mean = row.get(f"{metric}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    text = f"{mean:.4g}"
    if low is not None and not pd.isna(low):
        text += f" [{low:.3g}, {high:.3g}]"
    return text + {BEST: " ★", TIED: " ≈"}.get(row.get(f"{metric}_mark"), "")
