"""What the leaderboard says of each value's own error: Monte-Carlo standard errors and
values inside their noise, which set a distance's interval limits (samples or reference),
and that a distance's interval never lies below 0. Boards are built from constructed
trials whose answers are known by construction."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from harness.bench.reporting.report import annotate, footnote, leaderboard, markdown
from harness.metrics.bootstrap import LINEAR_SUFFIX

REPLICATES = 200


def _table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["label"], table["variant"] = table["sampler"], ""
    table["config_hash"] = [f"{r.sampler}-{r.seed}" for r in table.itertuples()]
    return table


def _cell(page: str, row: str, column: str) -> str:
    lines = page.splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    line = next(line for line in lines if line.startswith(f"| {row} |"))
    return line.split("|")[header.index(column) + 1].strip()


def test_a_single_seed_shows_its_standard_error_and_a_value_inside_its_noise_is_marked():
    """exact KL 0.002 with se 0.0046 is noise (†); 0.5 with se 0.01 is not. Over two
    seeds the se of the mean is the seeds' se / sqrt(2), 0.0042: 0.010 is outside 2 of
    them (though inside twice one seed's se), 0.004 is inside."""
    table = _table([
        {"sampler": "noisy", "steps": 10, "seed": 0, "discrete_kl": 0.002,
         "discrete_kl_stderr": 0.0046},
        {"sampler": "clear", "steps": 10, "seed": 0, "discrete_kl": 0.5,
         "discrete_kl_stderr": 0.01},
        *({"sampler": "outside", "steps": 20, "seed": s, "discrete_kl": v,
           "discrete_kl_stderr": 0.006} for s, v in enumerate((0.009, 0.011))),
        *({"sampler": "inside", "steps": 20, "seed": s, "discrete_kl": v,
           "discrete_kl_stderr": 0.006} for s, v in enumerate((0.003, 0.005))),
    ])
    board = leaderboard(table)
    page = markdown(board)
    assert _cell(page, "noisy", "discrete_kl") == "0.002 (se 0.0046) †"
    assert _cell(page, "clear", "discrete_kl") == "0.5 (se 0.01)"
    assert _cell(page, "outside", "discrete_kl") == "0.01 ± 0.0014"
    assert _cell(page, "inside", "discrete_kl") == "0.004 ± 0.0014 †"
    assert any(note.startswith("`a (se s)`") and "†" in note for note in footnote(board))


def _replicates(estimate: float, linear_sd: float, second_sd: float, shared: list[float],
                draw: random.Random) -> dict[str, list[float]]:
    """Replicates around `estimate` with linear parts of sd `linear_sd` (plus `shared`,
    the reference's part, the same for every row) and a second-order part of sd
    `second_sd`."""
    linear = [s + draw.gauss(0.0, linear_sd) for s in shared]
    values = [estimate + part + draw.gauss(0.0, second_sd) for part in linear]
    return {"kid": values, "kid" + LINEAR_SUFFIX: linear}


def test_a_negative_kid_gets_an_interval_from_zero_and_its_reference_share_is_stated():
    """Rows with se 1 from their samples and 2 from the reference, over one seed: the
    reference's share of the first-order variance is 4 / (4 + 1) = 80 %. A row at -5
    (below 0 by noise) reads as 0: its interval starts at 0 and reaches up by about
    1.96 sd of its replicates."""
    draw = random.Random(3)
    shared = [draw.gauss(0.0, 2.0) for _ in range(REPLICATES)]
    table = _table([{"sampler": name, "steps": 10, "seed": 0, "nfe": 10.0, "kid": value,
                     "kid_se_samples": 1.0, "kid_se_reference": 2.0}
                    for name, value in (("below", -5.0), ("above", 30.0))])
    replicates = {h: _replicates(v, 1.0, 0.5, shared, draw)
                  for h, v in zip(table["config_hash"], table["kid"])}
    board = annotate(leaderboard(table), table, replicates, minimums={"kid": 0.0})
    rows = board.set_index("sampler")
    sd = pd.Series(replicates["below-0"]["kid"]).std()
    assert rows.loc["below", "kid_ci_low"] == 0.0
    assert rows.loc["below", "kid_ci_high"] == pytest.approx(1.959964 * sd, rel=1e-6)
    assert rows.loc["above", "kid_ci_low"] > 20
    assert rows.loc["below", "kid_reference_share"] == pytest.approx(0.8)
    assert any("kid 80 % (the reference dominates)" in note for note in footnote(board))


def test_fid_inf_is_a_column_of_its_own_and_fid_takes_its_zero_from_its_bias():
    """`fid_inf` is not an extra of `fid` on the page. FID's lower end is judged by the
    variance at its zero, `fid` - distance, with the logged `fid_bias` as the zero: a
    larger bias (the same FID nearer its zero) gives a lower end closer to the estimate
    than a bias of 0 does."""
    draw = random.Random(5)
    rows, replicates = [], {}
    for name, bias in (("near", 9.5), ("far", 0.0)):
        rows.append({"sampler": name, "steps": 10, "seed": 0, "nfe": 10.0, "fid": 10.0,
                     "fid_bias": bias, "fid_inf": 10.0 - bias})
    table = _table(rows)
    linear = [draw.gauss(0.0, 1.0) for _ in range(REPLICATES)]
    fid = [10.0 + a + draw.gauss(0.0, 0.3) for a in linear]
    for h in table["config_hash"]:  # the same replicates: only the zero differs
        replicates[h] = {"fid": fid, "fid" + LINEAR_SUFFIX: linear,
                         "fid_inf": fid, "fid_inf" + LINEAR_SUFFIX: linear}
    board = annotate(leaderboard(table), table, replicates, minimums={"fid": 0.0,
                                                                      "fid_inf": 0.0})
    by = board.set_index("sampler")
    assert 10.0 - by.loc["near", "fid_ci_low"] < 10.0 - by.loc["far", "fid_ci_low"]
    assert by.loc["near", "fid_ci_high"] == pytest.approx(by.loc["far", "fid_ci_high"])
    header = markdown(board).splitlines()[0]
    assert "| fid | fid_inf |" in header
    assert not math.isnan(by.loc["near", "fid_inf_ci_low"])
